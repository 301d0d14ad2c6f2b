# The libzmq and libsodium functions the core calls, as pointer tables
# (core/includes/native.h). Every pointer type is `noexcept nogil`: without
# it Cython 3 re-takes the GIL after each call to look for an exception.

from libc.stddef cimport size_t

from includes.src cimport zm_crypto


cdef extern from "native.h" nogil:
    ctypedef struct zmq_msg_t:
        pass

    ctypedef struct zmq_pollitem_t:
        void *socket
        int fd
        short events
        short revents

    int ZM_EFSM
    int ZM_ENOCOMPATPROTO
    int ZM_ETERM
    int ZM_EMTHREAD
    int ZM_SOCK_DEALER
    int ZM_OPT_ROUTING_ID
    int ZM_OPT_FD
    int ZM_OPT_EVENTS
    int ZM_OPT_LINGER
    int ZM_OPT_RCVTIMEO
    int ZM_EVENT_CONNECTED
    int ZM_EVENT_CONNECT_RETRIED
    int ZM_EVENT_DISCONNECTED
    int ZM_EVENT_HANDSHAKE_FAILED_NO_DETAIL
    int ZM_EVENT_HANDSHAKE_SUCCEEDED
    int ZM_EVENT_HANDSHAKE_FAILED_PROTOCOL
    int ZM_EVENT_HANDSHAKE_FAILED_AUTH
    int ZM_DONTWAIT
    int ZM_SNDMORE
    int ZM_POLLIN
    int ZM_POLLOUT

    ctypedef struct zm_zmq:
        int (*msg_init)(zmq_msg_t *msg) noexcept nogil
        int (*msg_init_size)(zmq_msg_t *msg, size_t size) noexcept nogil
        int (*msg_init_data)(zmq_msg_t *msg, void *data, size_t size,
                             void (*ffn)(void *data, void *hint) noexcept nogil,
                             void *hint) noexcept nogil
        int (*msg_move)(zmq_msg_t *dest, zmq_msg_t *src) noexcept nogil
        int (*msg_send)(zmq_msg_t *msg, void *s, int flags) noexcept nogil
        int (*msg_recv)(zmq_msg_t *msg, void *s, int flags) noexcept nogil
        int (*msg_close)(zmq_msg_t *msg) noexcept nogil
        void *(*msg_data)(zmq_msg_t *msg) noexcept nogil
        size_t (*msg_size)(const zmq_msg_t *msg) noexcept nogil
        int (*msg_more)(const zmq_msg_t *msg) noexcept nogil
        const char *(*msg_gets)(const zmq_msg_t *msg, const char *prop) noexcept nogil
        int (*send)(void *s, const void *buf, size_t len, int flags) noexcept nogil
        int (*poll)(zmq_pollitem_t *items, int nitems, long timeout) noexcept nogil
        int (*getsockopt)(void *s, int option, void *optval, size_t *optvallen) noexcept nogil
        int (*setsockopt)(void *s, int option, const void *optval, size_t optvallen) noexcept nogil
        int (*socket_monitor)(void *s, const char *addr, int events) noexcept nogil
        int (*errno_)() noexcept nogil
        const char *(*strerror)(int errnum) noexcept nogil
        void (*version)(int *major, int *minor, int *patch) noexcept nogil

cdef extern from "native.h" nogil:
    ctypedef void (*zm_randombytes_fn)(void *buf, size_t size) noexcept nogil
    ctypedef int (*zm_sodium_init_fn)() noexcept nogil
    int RTLD_NOW
    int RTLD_NOLOAD
    void *dlopen(const char *filename, int flags)
    char *dlerror()
    const char *zm_native_load_zmq(void *handle, zm_zmq *api)
    const char *zm_native_load_sodium(void *handle, zm_crypto *api,
                                      zm_randombytes_fn *randombytes,
                                      zm_sodium_init_fn *init,
                                      size_t (**sha256_statebytes)() noexcept nogil)
    int zm_native_load_openssl(void *handle, zm_crypto *api)
    void zm_graveyard_free(void *data, void *hint) noexcept nogil
    size_t zm_graveyard_take(void ***out) noexcept nogil
