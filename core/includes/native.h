/* native.h - the slice of libzmq's and libsodium's C API the core calls.
 *
 * pyzmq's wheels ship no zmq.h and load libzmq (and the libsodium it links)
 * under mangled names, so the core declares the few types it needs here and
 * reaches the functions through pointer tables filled by dlsym at import
 * (core/native.pyx). Types and constants follow zmq.h of libzmq 4.3.
 */
#ifndef ZM_NATIVE_H
#define ZM_NATIVE_H

#include <dlfcn.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "zm_mac.h"

/* zmq.h: 64 opaque bytes, pointer-aligned (libzmq keeps an atomic refcount
 * inside; a misaligned copy would break it on some CPUs). */
typedef struct zmq_msg_t {
#if defined(__GNUC__) || defined(__clang__)
    unsigned char _[64] __attribute__((aligned(sizeof(void *))));
#else
    void *_align;
    unsigned char _[64 - sizeof(void *)];
#endif
} zmq_msg_t;

typedef struct zmq_pollitem_t {
    void *socket;
    int fd;
    short events;
    short revents;
} zmq_pollitem_t;

#define ZMQ_HAUSNUMERO 156384712
#define ZM_EFSM (ZMQ_HAUSNUMERO + 51)
#define ZM_ENOCOMPATPROTO (ZMQ_HAUSNUMERO + 52)
#define ZM_ETERM (ZMQ_HAUSNUMERO + 53)
#define ZM_EMTHREAD (ZMQ_HAUSNUMERO + 54)

/* zmq.h socket types and options */
#define ZM_SOCK_DEALER 5
#define ZM_OPT_ROUTING_ID 5
#define ZM_OPT_FD 14
#define ZM_OPT_EVENTS 15
#define ZM_OPT_LINGER 17
#define ZM_OPT_RCVTIMEO 27

/* zmq.h socket monitor events */
#define ZM_EVENT_CONNECTED 0x0001
#define ZM_EVENT_CONNECT_RETRIED 0x0004
#define ZM_EVENT_DISCONNECTED 0x0200
#define ZM_EVENT_HANDSHAKE_FAILED_NO_DETAIL 0x0800
#define ZM_EVENT_HANDSHAKE_SUCCEEDED 0x1000
#define ZM_EVENT_HANDSHAKE_FAILED_PROTOCOL 0x2000
#define ZM_EVENT_HANDSHAKE_FAILED_AUTH 0x4000

#define ZM_DONTWAIT 1
#define ZM_SNDMORE 2
#define ZM_POLLIN 1
#define ZM_POLLOUT 2

typedef struct zm_zmq {
    int (*msg_init)(zmq_msg_t *msg);
    int (*msg_init_size)(zmq_msg_t *msg, size_t size);
    int (*msg_init_data)(zmq_msg_t *msg, void *data, size_t size,
                         void (*ffn)(void *data, void *hint), void *hint);
    int (*msg_move)(zmq_msg_t *dest, zmq_msg_t *src);
    int (*msg_send)(zmq_msg_t *msg, void *s, int flags);
    int (*msg_recv)(zmq_msg_t *msg, void *s, int flags);
    int (*msg_close)(zmq_msg_t *msg);
    void *(*msg_data)(zmq_msg_t *msg);
    size_t (*msg_size)(const zmq_msg_t *msg);
    int (*msg_more)(const zmq_msg_t *msg);
    const char *(*msg_gets)(const zmq_msg_t *msg, const char *property);
    int (*send)(void *s, const void *buf, size_t len, int flags);
    int (*poll)(zmq_pollitem_t *items, int nitems, long timeout);
    int (*getsockopt)(void *s, int option, void *optval, size_t *optvallen);
    int (*setsockopt)(void *s, int option, const void *optval, size_t optvallen);
    int (*socket_monitor)(void *s, const char *addr, int events);
    int (*errno_)(void);
    const char *(*strerror)(int errnum);
    void (*version)(int *major, int *minor, int *patch);
} zm_zmq;

typedef void (*zm_randombytes_fn)(void *buf, size_t size);
typedef int (*zm_sodium_init_fn)(void);

/* Storing dlsym's void * into a function pointer: the POSIX idiom. */
#define ZM_DLSYM(handle, dst, name) (*(void **)(&(dst)) = dlsym((handle), (name)))

/* Fill *api from the library behind `handle` (and its dependencies).
 * Returns NULL, or the name of the first symbol not found. */
static const char *zm_native_load_zmq(void *handle, zm_zmq *api) {
#define ZM_LOAD(field, name) if (!ZM_DLSYM(handle, api->field, name)) return name;
    ZM_LOAD(msg_init, "zmq_msg_init")
    ZM_LOAD(msg_init_size, "zmq_msg_init_size")
    ZM_LOAD(msg_init_data, "zmq_msg_init_data")
    ZM_LOAD(msg_move, "zmq_msg_move")
    ZM_LOAD(msg_send, "zmq_msg_send")
    ZM_LOAD(msg_recv, "zmq_msg_recv")
    ZM_LOAD(msg_close, "zmq_msg_close")
    ZM_LOAD(msg_data, "zmq_msg_data")
    ZM_LOAD(msg_size, "zmq_msg_size")
    ZM_LOAD(msg_more, "zmq_msg_more")
    ZM_LOAD(msg_gets, "zmq_msg_gets")
    ZM_LOAD(send, "zmq_send")
    ZM_LOAD(poll, "zmq_poll")
    ZM_LOAD(getsockopt, "zmq_getsockopt")
    ZM_LOAD(setsockopt, "zmq_setsockopt")
    ZM_LOAD(socket_monitor, "zmq_socket_monitor")
    ZM_LOAD(errno_, "zmq_errno")
    ZM_LOAD(strerror, "zmq_strerror")
    ZM_LOAD(version, "zmq_version")
    return NULL;
}

/* libsodium (through pyzmq's libzmq): keyed BLAKE2b, SHA-256 (the fallback
 * when OpenSSL's is not loaded), random bytes. Returns NULL or the name of
 * the first symbol missing. */
static const char *zm_native_load_sodium(void *handle, zm_crypto *api,
                                         zm_randombytes_fn *randombytes,
                                         zm_sodium_init_fn *init,
                                         size_t (**sha256_statebytes)(void)) {
    if (!ZM_DLSYM(handle, *init, "sodium_init"))
        return "sodium_init";
    if (!ZM_DLSYM(handle, *randombytes, "randombytes_buf"))
        return "randombytes_buf";
    ZM_LOAD(generichash_statebytes, "crypto_generichash_statebytes")
    ZM_LOAD(generichash_init, "crypto_generichash_init")
    ZM_LOAD(generichash_update, "crypto_generichash_update")
    ZM_LOAD(generichash_final, "crypto_generichash_final")
    if (api->sha256_kind == 0 && ZM_DLSYM(handle, *sha256_statebytes,
                                          "crypto_hash_sha256_statebytes")) {
        ZM_LOAD(sha256_init, "crypto_hash_sha256_init")
        ZM_LOAD(sha256_update, "crypto_hash_sha256_update")
        ZM_LOAD(sha256_final_sodium, "crypto_hash_sha256_final")
        api->sha256_ctx_size = (*sha256_statebytes)();
        api->sha256_kind = ZM_SHA256_SODIUM;
    }
    return NULL;
}

/* OpenSSL's SHA-256 (SHA instructions where the CPU has them), from the
 * libcrypto Python's _hashlib loaded. 1 if found. */
static int zm_native_load_openssl(void *handle, zm_crypto *api) {
    zm_crypto c = *api;
    if (!ZM_DLSYM(handle, c.sha256_init, "SHA256_Init") ||
        !ZM_DLSYM(handle, c.sha256_update, "SHA256_Update") ||
        !ZM_DLSYM(handle, c.sha256_final_openssl, "SHA256_Final"))
        return 0;
    c.sha256_kind = ZM_SHA256_OPENSSL;
    c.sha256_ctx_size = 112; /* sizeof(SHA256_CTX): 8+2 words, 16 words, 2 ints */
    *api = c;
    return 1;
}
#undef ZM_LOAD

/* Zero-copy sends hand libzmq the bytes of a Python object; libzmq calls the
 * free function from its I/O thread when done, where Python objects must
 * not be touched. So the object (the hint) is parked here, and the core
 * releases parked objects later while it holds the GIL (zm_graveyard_take). */
typedef struct zm_graveyard {
    pthread_mutex_t lock;
    void **items;
    size_t n, cap;
} zm_graveyard;

static zm_graveyard zm_graves = {PTHREAD_MUTEX_INITIALIZER, NULL, 0, 0};

static void zm_graveyard_free(void *data, void *hint) {
    (void)data;
    pthread_mutex_lock(&zm_graves.lock);
    if (zm_graves.n == zm_graves.cap) {
        size_t cap = zm_graves.cap ? 2 * zm_graves.cap : 64;
        void **items = (void **)realloc(zm_graves.items, cap * sizeof(void *));
        if (items == NULL) { /* out of memory: leak the object, never crash */
            pthread_mutex_unlock(&zm_graves.lock);
            return;
        }
        zm_graves.items = items;
        zm_graves.cap = cap;
    }
    zm_graves.items[zm_graves.n] = hint;
    __atomic_store_n(&zm_graves.n, zm_graves.n + 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&zm_graves.lock);
}

/* Take the parked objects: returns their count; *out is malloc'd (or NULL). */
static size_t zm_graveyard_take(void ***out) {
    size_t n;
    /* Unlocked look first: called after every send, and almost always
     * empty. A racy read is a hint only: an object parked meanwhile is
     * taken next time. */
    if (__atomic_load_n(&zm_graves.n, __ATOMIC_RELAXED) == 0) {
        *out = NULL;
        return 0;
    }
    pthread_mutex_lock(&zm_graves.lock);
    *out = zm_graves.items;
    n = zm_graves.n;
    zm_graves.items = NULL;
    __atomic_store_n(&zm_graves.n, 0, __ATOMIC_RELAXED);
    zm_graves.cap = 0;
    pthread_mutex_unlock(&zm_graves.lock);
    return n;
}

#endif /* ZM_NATIVE_H */
