/* zmq_pingpong.c - libzmq echo client and server: the transport's limit.
 *
 * The end-to-end benchmark (bench/e2e/run.py) compares zmicro with this
 * program over tcp loopback, server and client in separate processes:
 *
 *   server --pattern rep     REP socket, echoes each message (zmq_msg, no copy)
 *   server --pattern router  ROUTER socket, echoes every frame of each message
 *                            (routing id first, so the reply goes back)
 *   client --pattern req     REQ ping-pong, one call at a time
 *   client --pattern dealer  DEALER sending [8-byte sequence number, body]
 *                            with up to --window calls in flight
 *   version                  prints the library file, zmq_version() and
 *                            whether it has CURVE (zmq_has("curve"))
 *   keypair                  prints a new CURVE key pair (zmq_curve_keypair),
 *                            Z85, as JSON {"public": ..., "secret": ...}
 *
 * --curve (server and client): CurveZMQ instead of the NULL mechanism, the
 * secure variants of the benchmark. Keys come from the environment, Z85
 * (40 characters), so that no secret key shows in a command line or a log:
 *   server  PP_CURVE_SERVER_SECRET               ZMQ_CURVE_SERVER=1 + its key
 *   client  PP_CURVE_SERVER_PUBLIC               ZMQ_CURVE_SERVERKEY
 *           PP_CURVE_CLIENT_PUBLIC, ..._SECRET   ZMQ_CURVE_PUBLICKEY/SECRETKEY
 * The server installs no ZAP handler and sets no ZAP domain, so libzmq
 * accepts any client key that completes the handshake: curve, no client
 * allowlist (zmicro's secure default does enforce one, through ZAP). The
 * client's JSON says which mechanism its socket used (ZMQ_MECHANISM).
 *
 * libzmq: pyzmq's wheels bundle libzmq under a mangled name and ship no zmq.h,
 * and the comparison is only fair on the same library, so this program links
 * no libzmq: --lib PATH dlopen()s the one pyzmq loads (run.py finds it) and
 * the few functions used are declared here, with the constants' documented
 * values (zmq_socket(3), zmq_setsockopt(3), zmq_send(3)). The output names the
 * file dladdr() says the symbols came from and the version it reports.
 *
 * Client modes (--mode):
 *   latency     --warmup calls discarded, then --iterations calls, each timed
 *               with clock_gettime(CLOCK_MONOTONIC) around send + receive;
 *   throughput  --window calls kept in flight (dealer only) for
 *               --warmup-seconds (discarded), then --seconds; every reply
 *               received in that span counts, and its latency (send of that
 *               call to its reply) is a sample;
 *   ping        one call, waiting up to --timeout-ms: the health check
 *               (and, without --curve against a --curve server, the check
 *               that the server refuses plaintext);
 *   count       --warmup + --iterations calls, none timed (with --pattern
 *               dealer, --window in flight): the workload that
 *               bench/callgrind/run.py counts instructions of, where a clock
 *               read per call would be part of the count.
 *
 * Samples go to --out as raw native int64 nanoseconds; stdout gets one JSON
 * object (library, mode, size, calls, elapsed ns, info: mechanism). Every
 * receive waits at most --timeout-ms, so a dead server ends the client with
 * an error: exit status 3 when no reply came in time, 1 for other errors.
 *
 *   cc -O2 -std=c11 bench/c/zmq_pingpong.c -ldl -o zmq_pingpong
 *   ./zmq_pingpong --lib .../pyzmq.libs/libzmq-XXXX.so.5.2.5 server \
 *       --pattern rep --bind tcp://127.0.0.1:5555 &
 *   ./zmq_pingpong --lib ... client --pattern req \
 *       --connect tcp://127.0.0.1:5555 --mode latency --size 64 \
 *       --iterations 20000 --out /tmp/samples.bin
 */
#define _GNU_SOURCE /* dladdr */

#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ========================================================================
 * libzmq: the ABI this program needs, loaded at run time.
 * ======================================================================== */

/* zmq_msg_t is 64 opaque bytes, pointer-aligned (libzmq 4.x ABI). */
typedef struct pp_msg {
    unsigned char opaque[64] __attribute__((aligned(sizeof(void *))));
} pp_msg;

enum {
    PP_ZMQ_REQ = 3,
    PP_ZMQ_REP = 4,
    PP_ZMQ_DEALER = 5,
    PP_ZMQ_ROUTER = 6,
    PP_ZMQ_DONTWAIT = 1,
    PP_ZMQ_SNDMORE = 2,
    PP_ZMQ_LINGER = 17,
    PP_ZMQ_RCVTIMEO = 27,
    PP_ZMQ_SNDTIMEO = 28,
    PP_ZMQ_MECHANISM = 43,
    PP_ZMQ_CURVE_SERVER = 47,
    PP_ZMQ_CURVE_PUBLICKEY = 48,
    PP_ZMQ_CURVE_SECRETKEY = 49,
    PP_ZMQ_CURVE_SERVERKEY = 50,
    /* ZMQ_MECHANISM values */
    PP_ZMQ_NULL = 0,
    PP_ZMQ_PLAIN = 1,
    PP_ZMQ_CURVE = 2,
    PP_ZMQ_GSSAPI = 3,
    PP_Z85_KEY_LEN = 40, /* a 32-byte key in Z85 */
};

typedef struct pp_zmq {
    void *(*ctx_new)(void);
    int (*ctx_term)(void *ctx);
    void *(*socket)(void *ctx, int type);
    int (*close)(void *s);
    int (*setsockopt)(void *s, int option, const void *val, size_t len);
    int (*getsockopt)(void *s, int option, void *val, size_t *len);
    int (*bind)(void *s, const char *addr);
    int (*connect)(void *s, const char *addr);
    int (*send)(void *s, const void *buf, size_t len, int flags);
    int (*recv)(void *s, void *buf, size_t len, int flags);
    int (*msg_init)(pp_msg *msg);
    int (*msg_send)(pp_msg *msg, void *s, int flags);
    int (*msg_recv)(pp_msg *msg, void *s, int flags);
    int (*msg_more)(const pp_msg *msg);
    int (*msg_close)(pp_msg *msg);
    int (*errno_)(void);
    const char *(*strerror)(int errnum);
    void (*version)(int *major, int *minor, int *patch);
    int (*has)(const char *capability);
    int (*curve_keypair)(char *z85_public, char *z85_secret);
} pp_zmq;

static pp_zmq Z;
static char g_lib_file[4096];
static char g_version[32];

static void pp_die(const char *what) {
    int e = Z.errno_ ? Z.errno_() : errno;
    fprintf(stderr, "zmq_pingpong: %s: %s\n", what,
            Z.strerror ? Z.strerror(e) : strerror(e));
    exit(1);
}

static void pp_load(const char *path) {
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "zmq_pingpong: dlopen %s: %s\n", path, dlerror());
        exit(2);
    }
    struct { void **dst; const char *name; } syms[] = {
        {(void **)&Z.ctx_new, "zmq_ctx_new"},
        {(void **)&Z.ctx_term, "zmq_ctx_term"},
        {(void **)&Z.socket, "zmq_socket"},
        {(void **)&Z.close, "zmq_close"},
        {(void **)&Z.setsockopt, "zmq_setsockopt"},
        {(void **)&Z.getsockopt, "zmq_getsockopt"},
        {(void **)&Z.bind, "zmq_bind"},
        {(void **)&Z.connect, "zmq_connect"},
        {(void **)&Z.send, "zmq_send"},
        {(void **)&Z.recv, "zmq_recv"},
        {(void **)&Z.msg_init, "zmq_msg_init"},
        {(void **)&Z.msg_send, "zmq_msg_send"},
        {(void **)&Z.msg_recv, "zmq_msg_recv"},
        {(void **)&Z.msg_more, "zmq_msg_more"},
        {(void **)&Z.msg_close, "zmq_msg_close"},
        {(void **)&Z.errno_, "zmq_errno"},
        {(void **)&Z.strerror, "zmq_strerror"},
        {(void **)&Z.version, "zmq_version"},
        {(void **)&Z.has, "zmq_has"},
        {(void **)&Z.curve_keypair, "zmq_curve_keypair"},
    };
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
        *syms[i].dst = dlsym(h, syms[i].name);
        if (!*syms[i].dst) {
            fprintf(stderr, "zmq_pingpong: %s has no %s\n", path, syms[i].name);
            exit(2);
        }
    }
    Dl_info info;
    const char *file = path;
    if (dladdr(*(void **)&Z.version, &info) && info.dli_fname)
        file = info.dli_fname;
    snprintf(g_lib_file, sizeof g_lib_file, "%s", file);
    int major, minor, patch;
    Z.version(&major, &minor, &patch);
    snprintf(g_version, sizeof g_version, "%d.%d.%d", major, minor, patch);
}

static void pp_setint(void *s, int option, int value) {
    if (Z.setsockopt(s, option, &value, sizeof value) != 0)
        pp_die("zmq_setsockopt");
}

/* ========================================================================
 * CURVE: keys from the environment, the mechanism a socket uses.
 * ======================================================================== */

static const char *pp_env_key(const char *name) {
    const char *v = getenv(name);
    if (!v || strlen(v) != PP_Z85_KEY_LEN) {
        fprintf(stderr, "zmq_pingpong: --curve needs %s, a %d-character Z85 "
                        "key (see `keypair`)\n", name, PP_Z85_KEY_LEN);
        exit(2);
    }
    return v;
}

/* A Z85 key option: libzmq decodes a 40-byte value as Z85. */
static void pp_setkey(void *s, int option, const char *env_name) {
    const char *key = pp_env_key(env_name);
    if (Z.setsockopt(s, option, key, PP_Z85_KEY_LEN) != 0)
        pp_die("zmq_setsockopt (curve key)");
}

static void pp_curve_server(void *s) {
    pp_setint(s, PP_ZMQ_CURVE_SERVER, 1);
    pp_setkey(s, PP_ZMQ_CURVE_SECRETKEY, "PP_CURVE_SERVER_SECRET");
}

static void pp_curve_client(void *s) {
    pp_setkey(s, PP_ZMQ_CURVE_SERVERKEY, "PP_CURVE_SERVER_PUBLIC");
    pp_setkey(s, PP_ZMQ_CURVE_PUBLICKEY, "PP_CURVE_CLIENT_PUBLIC");
    pp_setkey(s, PP_ZMQ_CURVE_SECRETKEY, "PP_CURVE_CLIENT_SECRET");
}

static const char *pp_mechanism(void *s) {
    int m = -1;
    size_t len = sizeof m;
    if (Z.getsockopt(s, PP_ZMQ_MECHANISM, &m, &len) != 0)
        pp_die("zmq_getsockopt (ZMQ_MECHANISM)");
    switch (m) {
    case PP_ZMQ_NULL: return "null";
    case PP_ZMQ_PLAIN: return "plain";
    case PP_ZMQ_CURVE: return "curve";
    case PP_ZMQ_GSSAPI: return "gssapi";
    default: return "unknown";
    }
}

/* ========================================================================
 * Helpers: time, options, samples, JSON.
 * ======================================================================== */

static inline int64_t pp_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

typedef struct pp_opts {
    const char *command; /* server | client | version */
    const char *pattern; /* rep | router | req | dealer */
    const char *bind;
    const char *connect;
    const char *mode; /* latency | throughput | ping | count */
    const char *out;
    int curve;
    long size;
    long iterations;
    long warmup;
    long window;
    double seconds;
    double warmup_seconds;
    int timeout_ms;
} pp_opts;

typedef struct pp_samples {
    int64_t *v;
    size_t n, cap;
} pp_samples;

static void pp_samples_add(pp_samples *s, int64_t ns) {
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 65536;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        if (!s->v) {
            fprintf(stderr, "zmq_pingpong: out of memory\n");
            exit(1);
        }
    }
    s->v[s->n++] = ns;
}

static void pp_samples_write(const pp_samples *s, const char *path) {
    if (!path)
        return;
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(s->v, sizeof *s->v, s->n, f) != s->n || fclose(f) != 0) {
        fprintf(stderr, "zmq_pingpong: cannot write %s\n", path);
        exit(1);
    }
}

/* JSON string body: the paths here are plain, but escape what JSON needs. */
static void pp_json_str(const char *s) {
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            printf("\\u%04x", *s);
        else
            putchar(*s);
    }
    putchar('"');
}

static void pp_json_lib(void) {
    printf("\"libzmq\": {\"file\": ");
    pp_json_str(g_lib_file);
    printf(", \"version\": \"%s\"}", g_version);
}

static void pp_report(const pp_opts *o, void *s, long window, size_t calls,
                      int64_t elapsed_ns) {
    printf("{");
    pp_json_lib();
    printf(", \"mode\": \"%s\", \"pattern\": \"%s\", \"size\": %ld, "
           "\"window\": %ld, \"calls\": %zu, \"elapsed_ns\": %lld, "
           "\"info\": {\"mechanism\": \"%s\"%s}}\n",
           o->mode, o->pattern, o->size, window, calls,
           (long long)elapsed_ns, pp_mechanism(s),
           o->curve ? ", \"client_allowlist\": \"none (server has no ZAP "
                      "handler)\"" : "");
}

/* ========================================================================
 * Server: echo until killed.
 * ======================================================================== */

static int pp_server(const pp_opts *o) {
    int router = strcmp(o->pattern, "router") == 0;
    if (!router && strcmp(o->pattern, "rep") != 0) {
        fprintf(stderr, "zmq_pingpong: server --pattern rep|router\n");
        return 2;
    }
    void *ctx = Z.ctx_new();
    void *s = Z.socket(ctx, router ? PP_ZMQ_ROUTER : PP_ZMQ_REP);
    if (!s)
        pp_die("zmq_socket");
    pp_setint(s, PP_ZMQ_LINGER, 0);
    if (o->curve)
        pp_curve_server(s);
    if (Z.bind(s, o->bind) != 0)
        pp_die("zmq_bind");
    fprintf(stderr, "zmq_pingpong: %s server on %s (%s, libzmq %s, %s)\n",
            o->pattern, o->bind, g_lib_file, g_version,
            o->curve ? "curve, no client allowlist: no ZAP handler"
                     : "null mechanism");
    pp_msg msg;
    for (;;) {
        /* Echo frame by frame: the message moves from recv to send, no copy.
         * REP strips and restores the envelope itself; ROUTER's first frame
         * is the peer's routing id, sent back first. */
        int more;
        do {
            Z.msg_init(&msg);
            if (Z.msg_recv(&msg, s, 0) < 0)
                pp_die("zmq_msg_recv");
            more = Z.msg_more(&msg);
            if (Z.msg_send(&msg, s, more ? PP_ZMQ_SNDMORE : 0) < 0)
                pp_die("zmq_msg_send");
        } while (more);
    }
    return 0;
}

/* ========================================================================
 * Clients.
 * ======================================================================== */

static void pp_recv_exact(void *s, void *buf, size_t cap, size_t want,
                          const char *what) {
    int n = Z.recv(s, buf, cap, 0);
    if (n < 0) {
        if (Z.errno_() == EAGAIN) {
            fprintf(stderr, "zmq_pingpong: no reply (%s) within the timeout\n",
                    what);
            exit(3);
        }
        pp_die("zmq_recv");
    }
    if ((size_t)n != want) {
        fprintf(stderr, "zmq_pingpong: %s is %d bytes, expected %zu\n", what, n,
                want);
        exit(1);
    }
}

static void *pp_client_socket(void *ctx, const pp_opts *o, int type) {
    void *s = Z.socket(ctx, type);
    if (!s)
        pp_die("zmq_socket");
    pp_setint(s, PP_ZMQ_LINGER, 0);
    pp_setint(s, PP_ZMQ_RCVTIMEO, o->timeout_ms);
    pp_setint(s, PP_ZMQ_SNDTIMEO, o->timeout_ms);
    if (o->curve)
        pp_curve_client(s);
    if (Z.connect(s, o->connect) != 0)
        pp_die("zmq_connect");
    return s;
}

/* REQ: one call at a time, each timed (but in count mode). */
static int pp_client_req(void *s, const pp_opts *o, unsigned char *body,
                         unsigned char *reply) {
    long total = strcmp(o->mode, "ping") == 0 ? 1 : o->warmup + o->iterations;
    long skip = strcmp(o->mode, "ping") == 0 ? 1 : o->warmup;
    int timed = strcmp(o->mode, "count") != 0;
    pp_samples samples = {0};
    int64_t start = 0;
    for (long i = 0; i < total; i++) {
        if (!timed) {
            if (Z.send(s, body, (size_t)o->size, 0) < 0)
                pp_die("zmq_send");
            pp_recv_exact(s, reply, (size_t)o->size + 1, (size_t)o->size,
                          "reply");
            continue;
        }
        if (i == skip)
            start = pp_now();
        int64_t t0 = pp_now();
        if (Z.send(s, body, (size_t)o->size, 0) < 0)
            pp_die("zmq_send");
        pp_recv_exact(s, reply, (size_t)o->size + 1, (size_t)o->size, "reply");
        int64_t t1 = pp_now();
        if (i >= skip)
            pp_samples_add(&samples, t1 - t0);
    }
    pp_samples_write(&samples, o->out);
    pp_report(o, s, 1, timed ? samples.n : (size_t)total,
              start ? pp_now() - start : 0);
    free(samples.v);
    return 0;
}

/* DEALER: [seq, body] with up to `window` in flight. In latency mode the
 * window is 1 (sequential, like REQ but over the DEALER/ROUTER pair); count
 * mode keeps `window` in flight and reads no clock. */
static int pp_client_dealer(void *s, const pp_opts *o, unsigned char *body,
                            unsigned char *reply) {
    int ping = strcmp(o->mode, "ping") == 0;
    int thr = strcmp(o->mode, "throughput") == 0;
    int count = strcmp(o->mode, "count") == 0;
    long window = thr || count ? o->window : 1;
    /* Send times by sequence number modulo a ring much larger than the
     * window; replies come back in order on one DEALER/ROUTER pair, and the
     * check below catches anything else. */
    enum { RING = 1 << 16 };
    if (window < 1 || window >= RING) {
        fprintf(stderr, "zmq_pingpong: --window 1..%d\n", RING - 1);
        return 2;
    }
    int64_t *sent_at = calloc(RING, sizeof *sent_at);
    pp_samples samples = {0};
    uint64_t next = 0, expect = 0;
    int64_t t_begin = 0, t_end = 0;
    long total = ping ? 1 : o->warmup + o->iterations;
    long skip = ping ? 1 : o->warmup;

    if (thr) {
        int64_t now = pp_now();
        t_begin = now + (int64_t)(o->warmup_seconds * 1e9);
        t_end = t_begin + (int64_t)(o->seconds * 1e9);
    }
    size_t counted = 0;
    int sending = 1;
    int64_t start = 0;
    for (;;) {
        /* Fill the window. */
        while (sending && (long)(next - expect) < window) {
            if (!thr && !count && (long)next == skip)
                start = pp_now();
            if (!thr && (long)next >= total) {
                sending = 0;
                break;
            }
            if (!count)
                sent_at[next % RING] = pp_now();
            if (Z.send(s, &next, sizeof next, PP_ZMQ_SNDMORE) < 0 ||
                Z.send(s, body, (size_t)o->size, 0) < 0)
                pp_die("zmq_send");
            next++;
        }
        if (expect == next)
            break;
        uint64_t seq;
        pp_recv_exact(s, &seq, sizeof seq, sizeof seq, "sequence frame");
        pp_recv_exact(s, reply, (size_t)o->size + 1, (size_t)o->size, "reply");
        int64_t t1 = count ? 0 : pp_now();
        if (seq != expect) {
            fprintf(stderr, "zmq_pingpong: reply %llu, expected %llu\n",
                    (unsigned long long)seq, (unsigned long long)expect);
            return 1;
        }
        expect++;
        if (count)
            continue;
        int64_t lat = t1 - sent_at[seq % RING];
        if (thr) {
            if (t1 >= t_begin && t1 < t_end) {
                pp_samples_add(&samples, lat);
                counted++;
            }
            if (t1 >= t_end)
                sending = 0; /* then drain what is in flight */
        } else if ((long)seq >= skip) {
            pp_samples_add(&samples, lat);
        }
    }
    int64_t elapsed = thr ? t_end - t_begin : (start ? pp_now() - start : 0);
    pp_samples_write(&samples, o->out);
    pp_report(o, s, window, thr ? counted : count ? (size_t)total : samples.n,
              elapsed);
    free(samples.v);
    free(sent_at);
    return 0;
}

static int pp_client(const pp_opts *o) {
    int dealer = strcmp(o->pattern, "dealer") == 0;
    if (!dealer && strcmp(o->pattern, "req") != 0) {
        fprintf(stderr, "zmq_pingpong: client --pattern req|dealer\n");
        return 2;
    }
    if (strcmp(o->mode, "latency") && strcmp(o->mode, "throughput") &&
        strcmp(o->mode, "ping") && strcmp(o->mode, "count")) {
        fprintf(stderr, "zmq_pingpong: --mode latency|throughput|ping|count\n");
        return 2;
    }
    if (!dealer && strcmp(o->mode, "throughput") == 0) {
        fprintf(stderr, "zmq_pingpong: REQ has one call in flight; "
                        "throughput needs --pattern dealer\n");
        return 2;
    }
    if (!o->connect || o->size < 0) {
        fprintf(stderr, "zmq_pingpong: client needs --connect and --size\n");
        return 2;
    }
    unsigned char *body = malloc((size_t)o->size + 1);
    unsigned char *reply = malloc((size_t)o->size + 1);
    for (long i = 0; i < o->size; i++)
        body[i] = (unsigned char)(i * 31 + 7);
    void *ctx = Z.ctx_new();
    void *s = pp_client_socket(ctx, o, dealer ? PP_ZMQ_DEALER : PP_ZMQ_REQ);
    int rc = dealer ? pp_client_dealer(s, o, body, reply)
                    : pp_client_req(s, o, body, reply);
    if (rc == 0 && o->size > 0 && memcmp(body, reply, (size_t)o->size) != 0) {
        fprintf(stderr, "zmq_pingpong: the echo differs from the request\n");
        rc = 1;
    }
    Z.close(s);
    Z.ctx_term(ctx);
    free(body);
    free(reply);
    return rc;
}

/* ========================================================================
 * main
 * ======================================================================== */

static void pp_usage(void) {
    fprintf(stderr,
            "usage: zmq_pingpong --lib LIBZMQ version|keypair\n"
            "       zmq_pingpong --lib LIBZMQ server --pattern rep|router "
            "--bind ADDR [--curve]\n"
            "       zmq_pingpong --lib LIBZMQ client --pattern req|dealer "
            "--connect ADDR [--curve]\n"
            "           --mode latency|throughput|ping|count --size N "
            "[--iterations N]"
            " [--warmup N]\n"
            "           [--window N] [--seconds S] [--warmup-seconds S] "
            "[--timeout-ms N] [--out FILE]\n"
            "--curve keys (Z85) from the environment: server "
            "PP_CURVE_SERVER_SECRET;\n"
            "client PP_CURVE_SERVER_PUBLIC, PP_CURVE_CLIENT_PUBLIC, "
            "PP_CURVE_CLIENT_SECRET\n");
    exit(2);
}

int main(int argc, char **argv) {
    pp_opts o = {.mode = "latency", .pattern = "", .size = 64,
                 .iterations = 10000, .warmup = 1000, .window = 64,
                 .seconds = 2.0, .warmup_seconds = 0.3, .timeout_ms = 5000};
    const char *lib = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define PP_OPT(name) (strcmp(a, name) == 0 && v && (i++, 1))
        if (PP_OPT("--lib")) lib = v;
        else if (PP_OPT("--pattern")) o.pattern = v;
        else if (PP_OPT("--bind")) o.bind = v;
        else if (PP_OPT("--connect")) o.connect = v;
        else if (PP_OPT("--mode")) o.mode = v;
        else if (PP_OPT("--out")) o.out = v;
        else if (PP_OPT("--size")) o.size = atol(v);
        else if (PP_OPT("--iterations")) o.iterations = atol(v);
        else if (PP_OPT("--warmup")) o.warmup = atol(v);
        else if (PP_OPT("--window")) o.window = atol(v);
        else if (PP_OPT("--seconds")) o.seconds = atof(v);
        else if (PP_OPT("--warmup-seconds")) o.warmup_seconds = atof(v);
        else if (PP_OPT("--timeout-ms")) o.timeout_ms = atoi(v);
        else if (strcmp(a, "--curve") == 0) o.curve = 1;
        else if (a[0] != '-' && !o.command) o.command = a;
        else pp_usage();
#undef PP_OPT
    }
    if (!lib || !o.command)
        pp_usage();
    pp_load(lib);
    if (strcmp(o.command, "version") == 0) {
        printf("{");
        pp_json_lib();
        printf(", \"curve\": %s}\n", Z.has("curve") ? "true" : "false");
        return 0;
    }
    if (strcmp(o.command, "keypair") == 0) {
        char pub[PP_Z85_KEY_LEN + 1], sec[PP_Z85_KEY_LEN + 1];
        if (Z.curve_keypair(pub, sec) != 0)
            pp_die("zmq_curve_keypair");
        printf("{\"public\": ");
        pp_json_str(pub);
        printf(", \"secret\": ");
        pp_json_str(sec);
        printf("}\n");
        return 0;
    }
    if (strcmp(o.command, "server") == 0) {
        if (!o.bind)
            pp_usage();
        return pp_server(&o);
    }
    if (strcmp(o.command, "client") == 0)
        return pp_client(&o);
    pp_usage();
    return 2;
}
