# mac.pyx - MACs (src/zm_mac.c) and random bytes for Python, computed in C
# with the GIL released: SHA-256 from OpenSSL's libcrypto or libsodium, keyed
# BLAKE2b from libsodium (native.pyx finds them). An algorithm neither
# provides runs in zmicro.security._mac_fallback (hashlib/hmac: same results), said
# once.
#
# Uses: native.pyx (CRYPTO, C_HMAC, C_BLAKE2B, RANDOMBYTES, mac_backends),
# buffers.pyx (Views), errors.pyx (raise_zm); zmicro.security._mac_fallback.

import logging as _logging

MAC_HMAC_SHA256 = ZM_MAC_HMAC_SHA256
MAC_BLAKE2B = ZM_MAC_BLAKE2B
# BLAKE3 (keyed) is computed by the `blake3` package, not by src/: it has
# no id in zm_mac.h.
MAC_BLAKE3 = 3
cdef int ALG_BLAKE3 = MAC_BLAKE3
MAC_SIZE = ZM_MAC_SIZE
#: The first bytes of every MAC input (docs/protocol.md §7).
MAC_DOMAIN = (<bytes>ZM_MAC_DOMAIN)[:ZM_MAC_DOMAIN_LEN]
MAC_KEY_MIN = ZM_MAC_KEY_MIN
MAC_KEY_MAX = ZM_MAC_KEY_MAX
FRAME_MAX = ZM_FRAME_MAX

cdef object _python_macs = None
cdef bint _fallback_said = False


cdef object _python_module():
    """zmicro.security._mac_fallback: the MACs Python computes (BLAKE3
    always, through the blake3 package; the others when C cannot)."""
    global _python_macs
    if _python_macs is None:
        from zmicro.security import _mac_fallback
        _python_macs = _mac_fallback
    return _python_macs


cdef object _fallback_module():
    """_python_module(), for an algorithm C should have computed: says so once."""
    global _fallback_said
    if not _fallback_said:
        _fallback_said = True
        slow = [name for name, who in mac_backends().items() if who == "python"]
        _logging.getLogger("zmicro").warning(
            "libsodium / OpenSSL's SHA-256 were not found: %s MACs are computed "
            "by Python's hmac/hashlib (same results, slower, GIL held)",
            " and ".join(slow))
    return _python_module()


cdef inline bint c_mac(int alg) noexcept:
    """True if the core computes `alg` in C (else: Python's fallback)."""
    return (alg == ZM_MAC_HMAC_SHA256 and C_HMAC) or (alg == ZM_MAC_BLAKE2B and C_BLAKE2B)


cdef inline bint python_mac(int alg) noexcept:
    return (alg == ZM_MAC_HMAC_SHA256 or alg == ZM_MAC_BLAKE2B) and not c_mac(alg)


def mac_compute(int alg, key, frames):
    """The MAC (32 bytes) of `frames` under `key` (docs/protocol.md §7).

    `alg` is MAC_HMAC_SHA256 or MAC_BLAKE2B (`key` 16 to 64 bytes) or
    MAC_BLAKE3 (`key` 32 bytes); `frames` up to FRAME_MAX bytes-like
    objects: the MAC input's items, the binding first (b"" for a request),
    then the header frame and the body frames.
    """
    cdef Py_buffer kview
    cdef zm_slice k
    cdef Views f
    cdef unsigned char out[ZM_MAC_SIZE]
    cdef int rc
    if alg == ALG_BLAKE3:  # the blake3 package computes it (keyring.pyx)
        if len(frames) > ZM_FRAME_MAX:
            raise ValueError(f"at most {ZM_FRAME_MAX} frames, got {len(frames)}")
        return _python_module().compute(alg, key, frames)
    if python_mac(alg):
        return _fallback_module().compute(alg, key, frames)
    f.n = 0
    memset(&kview, 0, sizeof(Py_buffer))
    try:
        view_get(key, &kview, &k)
        views_get(&f, frames, ZM_FRAME_MAX)
        with nogil:
            rc = zm_mac_compute(&CRYPTO, alg, k.ptr, k.len, f.slices, <size_t>f.n, out)
    finally:
        views_release(&f)
        PyBuffer_Release(&kview)
    if rc != ZM_OK:
        raise_zm(rc)
    return PyBytes_FromStringAndSize(<char *>out, ZM_MAC_SIZE)


def mac_verify(int alg, key, frames, tag):
    """True if `tag` is the MAC of `frames` under `key` (constant time)."""
    cdef Py_buffer kview, tview
    cdef zm_slice k, t
    cdef Views f
    cdef int rc
    if alg == ALG_BLAKE3:
        import hmac
        return hmac.compare_digest(mac_compute(alg, key, frames), bytes(tag))
    if python_mac(alg):
        return _fallback_module().verify(alg, key, frames, tag)
    f.n = 0
    memset(&kview, 0, sizeof(Py_buffer))
    memset(&tview, 0, sizeof(Py_buffer))
    try:
        view_get(key, &kview, &k)
        view_get(tag, &tview, &t)
        views_get(&f, frames, ZM_FRAME_MAX)
        if t.len != ZM_MAC_SIZE:  # same errors as a full check, then no
            if not ZM_MAC_KEY_MIN <= k.len <= ZM_MAC_KEY_MAX:
                raise_zm(ZM_E_MAC_KEY)
            if alg != ZM_MAC_HMAC_SHA256 and alg != ZM_MAC_BLAKE2B:
                raise_zm(ZM_E_MAC_ALG)
            return False
        with nogil:
            rc = zm_mac_verify(&CRYPTO, alg, k.ptr, k.len, f.slices, <size_t>f.n, t.ptr)
    finally:
        views_release(&f)
        PyBuffer_Release(&kview)
        PyBuffer_Release(&tview)
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
    if RANDOMBYTES == NULL:
        return _os.urandom(n)
    out = PyBytes_FromStringAndSize(NULL, n)
    RANDOMBYTES(PyBytes_AS_STRING(out), <size_t>n)
    return out
