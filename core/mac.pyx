# mac.pyx - MACs over frames (src/zm_mac.c) and random bytes, computed by
# the libsodium pyzmq loaded, with the GIL released. Without libsodium the
# same algorithms run in zmicro._mac_fallback (hashlib/hmac), said once.

import logging as _logging

MAC_HMAC_SHA256 = ZM_MAC_HMAC_SHA256
MAC_BLAKE2B = ZM_MAC_BLAKE2B
MAC_SIZE = ZM_MAC_OUT
MAC_KEY_MIN = ZM_MAC_KEY_MIN
MAC_KEY_MAX = ZM_MAC_KEY_MAX
FRAME_MAX = ZM_FRAME_MAX

cdef object _fallback = None


cdef object _fallback_module():
    global _fallback
    if _fallback is None:
        from zmicro import _mac_fallback
        _fallback = _mac_fallback
        _logging.getLogger("zmicro").warning(
            "libsodium was not found through pyzmq: MACs are computed by "
            "Python's hmac/hashlib (same algorithms, slower, GIL held)")
    return _fallback


@cython.auto_pickle(False)
cdef class _Frames:
    """Borrowed views of up to `limit` bytes-like objects as zm_slices,
    released when the object goes away."""

    cdef Py_buffer views[ZM_FRAME_MAX + 1]  # one per frame
    cdef zm_slice slices[ZM_FRAME_MAX + 1]  # the same bytes, for src/
    cdef int n                              # views held

    def __cinit__(self, frames, int limit=ZM_FRAME_MAX):
        cdef Py_ssize_t count = len(frames)
        if count > limit:
            raise ValueError(f"at most {limit} frames, got {count}")
        self.n = 0
        for frame in frames:
            PyObject_GetBuffer(frame, &self.views[self.n], PyBUF_SIMPLE)
            self.slices[self.n].ptr = <const uint8_t *>self.views[self.n].buf
            self.slices[self.n].len = <size_t>self.views[self.n].len
            self.n += 1

    def __dealloc__(self):
        while self.n > 0:
            self.n -= 1
            PyBuffer_Release(&self.views[self.n])


def mac_compute(int alg, key, frames):
    """The MAC (32 bytes) of `frames` under `key` (docs/protocol.md).

    `alg` is MAC_HMAC_SHA256 or MAC_BLAKE2B; `key` 16 to 64 bytes; `frames`
    up to FRAME_MAX bytes-like objects (the header frame, then the bodies).
    """
    cdef const unsigned char[::1] k
    cdef _Frames f
    cdef unsigned char out[ZM_MAC_OUT]
    cdef int rc
    if not HAVE_SODIUM:
        return _fallback_module().compute(alg, key, frames)
    k = key
    f = _Frames(frames)
    with nogil:
        rc = zm_mac_compute(&SODIUM, alg, &k[0] if k.shape[0] else NULL,
                            <size_t>k.shape[0], f.slices, <size_t>f.n, out)
    if rc != ZM_OK:
        raise_zm(rc)
    return PyBytes_FromStringAndSize(<char *>out, ZM_MAC_OUT)


def mac_verify(int alg, key, frames, tag):
    """True if `tag` is the MAC of `frames` under `key` (constant time)."""
    cdef const unsigned char[::1] k
    cdef const unsigned char[::1] t
    cdef _Frames f
    cdef int rc
    if not HAVE_SODIUM:
        return _fallback_module().verify(alg, key, frames, tag)
    k = key
    t = tag
    f = _Frames(frames)
    if t.shape[0] != ZM_MAC_OUT:
        if not ZM_MAC_KEY_MIN <= k.shape[0] <= ZM_MAC_KEY_MAX:
            raise_zm(ZM_E_MAC_KEY)
        if alg != ZM_MAC_HMAC_SHA256 and alg != ZM_MAC_BLAKE2B:
            raise_zm(ZM_E_MAC_ALG)
        return False
    with nogil:
        rc = zm_mac_verify(&SODIUM, alg, &k[0] if k.shape[0] else NULL,
                           <size_t>k.shape[0], f.slices, <size_t>f.n, &t[0])
    if rc == ZM_OK:
        return True
    if rc == ZM_E_MAC_MISMATCH:
        return False
    raise_zm(rc)


def random_bytes(Py_ssize_t n):
    """`n` bytes from libsodium's CSPRNG (os.urandom without libsodium)."""
    cdef bytes out
    if n < 0:
        raise ValueError("n must be >= 0")
    if not HAVE_SODIUM:
        return _os.urandom(n)
    out = PyBytes_FromStringAndSize(NULL, n)
    RANDOMBYTES(PyBytes_AS_STRING(out), <size_t>n)
    return out
