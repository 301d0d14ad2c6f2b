# codecs.pyx - codecs as the core sees them: which function encodes, which
# decodes into a type (built once and cached), which exceptions mean "this
# body is invalid", and which codecs do nothing at all (octet-stream: the
# body is the value; the core then calls no Python).
#
# Uses: nothing of the core's. CodecEntry.decoder_for is the one decoder
# cache: the client and the server both ask it.

cdef object IDENTITY = object()  # a decoder slot meaning "the body is the value"


@cython.auto_pickle(False)
cdef class CodecEntry:
    def __init__(self, codec, int index=0):
        self.codec = codec
        self.name = codec.content_type
        self.key = self.name.encode()
        self.encode = codec.encode
        self.invalid = tuple(getattr(codec, "invalid", ()))
        self.passthrough = bool(getattr(codec, "passthrough", False))
        self.index = index
        self.decoders = {}

    cdef object decoder_for(self, object tp):
        """codec.decoder(tp), cached; IDENTITY when it returned None."""
        decode = self.decoders.get(tp)
        if decode is None:
            decode = self.codec.decoder(tp)
            if decode is None:
                decode = IDENTITY
            self.decoders[tp] = decode
        return decode

    cdef object encode_value(self, object value):
        if self.passthrough:
            if not PyObject_CheckBuffer(value):
                raise TypeError(f"{self.name} carries bytes-like values, not "
                                f"{type(value).__name__}")
            return value
        return self.encode(value)

    def __repr__(self):
        return f"<CodecEntry {self.name}>"


cdef dict codec_entries(dict codecs):
    """content type -> CodecEntry, indexes in insertion order."""
    cdef dict out = {}
    for i, (name, codec) in enumerate(codecs.items()):
        out[name] = CodecEntry(codec, i)
    return out
