cdef struct Views:
    # Borrowed bytes of up to ZM_FRAME_MAX + 1 Python objects, for src/.
    # Lives on the caller's stack; views_release() must follow views_get().
    Py_buffer views[ZM_FRAME_MAX + 1]  # held buffer views (obj NULL: none held)
    zm_slice slices[ZM_FRAME_MAX + 1]  # the bytes of each object
    int n                              # entries filled


cdef int view_get(object obj, Py_buffer *view, zm_slice *out) except -1
cdef int views_get(Views *v, object objs, int limit) except -1
cdef void views_release(Views *v) noexcept
cdef bint same_bytes(bytes b, const void *p, size_t n) noexcept
