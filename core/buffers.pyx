# buffers.pyx - Python bytes-like objects as zm_slices for src/, without
# allocating: bytes are read in place, anything else through the buffer
# protocol. (Cython typed memoryviews cost ~120 ns each here, a heap object
# holding the views more: bench/RESULTS.md, micro section.)
#
# Uses: CPython's buffer protocol only.


cdef int view_get(object obj, Py_buffer *view, zm_slice *out) except -1:
    """Point `out` at the bytes of `obj`; release `view` when done with it."""
    memset(view, 0, sizeof(Py_buffer))
    if type(obj) is bytes:  # nothing to hold: bytes are immutable
        out.ptr = <const uint8_t *>PyBytes_AS_STRING(obj)
        out.len = <size_t>PyBytes_GET_SIZE(obj)
        return 0
    PyObject_GetBuffer(obj, view, PyBUF_SIMPLE)
    out.ptr = <const uint8_t *>view.buf
    out.len = <size_t>view.len
    return 0


cdef int views_get(Views *v, object objs, int limit) except -1:
    """Fill `v` from the sequence `objs` (at most `limit` of them). On an
    error the views taken so far stay counted in v.n for views_release."""
    cdef Py_ssize_t count = len(objs)
    v.n = 0
    if count > limit:
        raise ValueError(f"at most {limit} frames, got {count}")
    for obj in objs:
        if v.n == count:  # the sequence grew while we iterated
            raise ValueError("frames changed size during iteration")
        view_get(obj, &v.views[v.n], &v.slices[v.n])
        v.n += 1
    return 0


cdef void views_release(Views *v) noexcept:
    while v.n > 0:
        v.n -= 1
        PyBuffer_Release(&v.views[v.n])


cdef bint same_bytes(bytes b, const void *p, size_t n) noexcept:
    """True if `b` holds exactly the n bytes at p (p may be NULL when n is
    0: an empty header field; memcmp must never see NULL, even for 0)."""
    if <size_t>PyBytes_GET_SIZE(b) != n:
        return False
    return n == 0 or memcmp(PyBytes_AS_STRING(b), p, n) == 0
