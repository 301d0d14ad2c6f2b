cdef class CodecEntry:
    """A codec (python/zmicro/codec.py) as the core uses it."""

    cdef readonly str name            # content type
    cdef bytes key                    # content type in UTF-8, as in headers
    cdef readonly object codec        # the Codec
    cdef object encode                # codec.encode
    cdef tuple invalid                # exceptions meaning "the body is invalid"
    cdef bint passthrough             # encode and decode are the identity
    cdef int index                    # slot in Endpoint.decoders
    cdef dict decoders                # type -> decode function or IDENTITY

    cdef object decoder_for(self, object tp)
    cdef object encode_value(self, object value)


cdef dict codec_entries(dict codecs)
cdef object IDENTITY
