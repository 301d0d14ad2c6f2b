/* bench_src.c - the pure C cost of zmicro's core pieces (src/ alone).
 *
 * Times zm_wire_write / zm_wire_size / zm_wire_read of the typical request
 * header (and its signed variant) and zm_mac_compute / zm_mac_verify over
 * [typical header, body] for 64 B and 4 KiB bodies, HMAC-SHA256 and BLAKE2b.
 * The inputs are the ones bench/data.py gives the Python benchmarks; with
 * --json the program prints the encoded headers and MACs so run_micro.py can
 * check that both sides compute the same bytes.
 *
 * Method: each operation is calibrated to a batch of N calls lasting at least
 * --batch-ns (default 10 us, about pytest-benchmark's rounds), warmed up, then
 * run in batches timed with clock_gettime(CLOCK_MONOTONIC) until --max-time
 * (at least --min-batches). Reported: per-call ns of each batch (batch time /
 * N), median and p99 over batches (linear interpolation between ranks).
 *
 * libsodium, for the zm_sodium table of src/zm_mac.h, comes in two builds:
 *
 *   default                  links the system's libsodium (-lsodium, Debian's
 *                            1.0.18 here) through tiny wrappers with the
 *                            table's exact prototypes;
 *   -DBENCH_SODIUM_DLOPEN    links no libsodium; --sodium PATH dlopen()s one
 *                            (run_micro.py passes the copy bundled in pyzmq's
 *                            wheel, the one the Python core uses) and fills
 *                            the table with dlsym() as core/native.pyx does.
 *
 * The output names the libsodium used (version and where it came from).
 *
 *   cc -O2 -std=c11 -Isrc bench/c/bench_src.c src/zm_common.c src/zm_wire.c \
 *      src/zm_frame.c src/zm_mac.c -lsodium -lm -o bench_src
 *   (the same with -DBENCH_SODIUM_DLOPEN and -ldl in place of -lsodium)
 */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "zm_mac.h"
#include "zm_wire.h"

#include <dlfcn.h>
#ifndef BENCH_SODIUM_DLOPEN
#include <sodium.h>
#endif

/* ========================================================================
 * Inputs: keep in step with bench/data.py (run_micro.py compares bytes).
 * ======================================================================== */

#define TRACE_HI 0x4BF92F3577B34DA6ull
#define TRACE_LO 0xA3CE929D0E0E4736ull
#define SPAN_ID 0x00F067AA0BA902B7ull
#define TRACEPARENT "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
#define REQUEST_ID 1000003ull
#define DEADLINE_US 250000ull
#define KEY_ID 7u
#define TIMESTAMP_US 1700000000000000ull
#define BODY_MAX 4096

static zm_slice slice_str(const char *s) {
    zm_slice out = {(const uint8_t *)s, strlen(s)};
    return out;
}

static uint8_t g_nonce[16];
static uint8_t g_key[32];
static uint8_t g_body[BODY_MAX];

static void make_header(zm_header *h, int signed_) {
    memset(h, 0, sizeof *h);
    h->version = 1;
    h->kind = ZM_KIND_REQUEST;
    h->request_id = REQUEST_ID;
    h->deadline_us = DEADLINE_US;
    h->trace_hi = TRACE_HI;
    h->trace_lo = TRACE_LO;
    h->span_id = SPAN_ID;
    h->content_type = slice_str("application/msgpack");
    h->service = slice_str("greeter");
    h->endpoint = slice_str("Greeter.Hello");
    h->n_metadata = 1;
    h->metadata[0].key = slice_str("traceparent");
    h->metadata[0].value = slice_str(TRACEPARENT);
    if (signed_) {
        h->flags = ZM_FLAG_SIGNED;
        h->key_id = KEY_ID;
        h->timestamp_us = TIMESTAMP_US;
        h->nonce.ptr = g_nonce;
        h->nonce.len = sizeof g_nonce;
    }
}

static void make_data(void) {
    for (size_t i = 0; i < sizeof g_nonce; i++)
        g_nonce[i] = (uint8_t)(0xA0 + i);
    for (size_t i = 0; i < sizeof g_key; i++)
        g_key[i] = (uint8_t)i;
    for (size_t i = 0; i < BODY_MAX; i++)
        g_body[i] = (uint8_t)((i * 31 + 7) & 0xFF);
}

/* ========================================================================
 * libsodium -> zm_sodium
 * ======================================================================== */

static zm_crypto g_api;
static const char *g_sodium_version = "?";
static const char *g_sodium_source = "?";
static const char *g_sha256_source = "libsodium";

/* As the core does (core/native.pyx): SHA-256 for HMAC from OpenSSL's
 * libcrypto when it is there (the CPU's SHA instructions), else libsodium's. */
static void openssl_sha256(void) {
    void *h = dlopen("libcrypto.so.3", RTLD_NOW | RTLD_LOCAL);
    zm_crypto c = g_api;
    if (!h || !(*(void **)(&c.sha256_init) = dlsym(h, "SHA256_Init")) ||
        !(*(void **)(&c.sha256_update) = dlsym(h, "SHA256_Update")) ||
        !(*(void **)(&c.sha256_final_openssl) = dlsym(h, "SHA256_Final")))
        return;
    c.sha256_kind = ZM_SHA256_OPENSSL;
    c.sha256_ctx_size = 112; /* sizeof(SHA256_CTX) */
    g_api = c;
    g_sha256_source = "OpenSSL libcrypto.so.3";
}

#ifdef BENCH_SODIUM_DLOPEN

#define LOAD(field, name)                                           \
    if (!(*(void **)(&g_api.field) = dlsym(handle, name))) {        \
        fprintf(stderr, "bench_src: %s: no symbol %s\n", path, name); \
        return -1;                                                  \
    }

static int sodium_setup(const char *path) {
    static char source[4096];
    int (*init)(void);
    const char *(*version)(void);
    if (!path) {
        fprintf(stderr, "bench_src: this build needs --sodium PATH\n");
        return -1;
    }
    void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        fprintf(stderr, "bench_src: dlopen(%s): %s\n", path, dlerror());
        return -1;
    }
    size_t (*sha_statebytes)(void);
    LOAD(sha256_init, "crypto_hash_sha256_init")
    LOAD(sha256_update, "crypto_hash_sha256_update")
    LOAD(sha256_final_sodium, "crypto_hash_sha256_final")
    LOAD(generichash_statebytes, "crypto_generichash_statebytes")
    LOAD(generichash_init, "crypto_generichash_init")
    LOAD(generichash_update, "crypto_generichash_update")
    LOAD(generichash_final, "crypto_generichash_final")
    if (!(*(void **)(&sha_statebytes) = dlsym(handle, "crypto_hash_sha256_statebytes")))
        return -1;
    g_api.sha256_kind = ZM_SHA256_SODIUM;
    g_api.sha256_ctx_size = sha_statebytes();
    if (!(*(void **)(&init) = dlsym(handle, "sodium_init")) ||
        !(*(void **)(&version) = dlsym(handle, "sodium_version_string"))) {
        fprintf(stderr, "bench_src: %s: no sodium_init/version\n", path);
        return -1;
    }
    if (init() < 0)
        return -1;
    g_sodium_version = version();
    snprintf(source, sizeof source, "dlopen %s", path);
    g_sodium_source = source;
    openssl_sha256();
    return 0;
}
#undef LOAD

#else /* linked -lsodium */

/* The table's prototypes take void * for the state; libsodium's take its
 * state types. One-line wrappers (tail calls at -O2) bridge them. */
static int w_sha_init(void *st) {
    return crypto_hash_sha256_init((crypto_hash_sha256_state *)st);
}
static int w_sha_update(void *st, const void *in, size_t len) {
    return crypto_hash_sha256_update((crypto_hash_sha256_state *)st, in,
                                     (unsigned long long)len);
}
static int w_sha_final(void *st, unsigned char *out) {
    return crypto_hash_sha256_final((crypto_hash_sha256_state *)st, out);
}
static size_t w_gh_statebytes(void) { return crypto_generichash_statebytes(); }
static int w_gh_init(void *st, const unsigned char *key, size_t keylen,
                     size_t outlen) {
    return crypto_generichash_init((crypto_generichash_state *)st, key, keylen,
                                   outlen);
}
static int w_gh_update(void *st, const unsigned char *in,
                       unsigned long long inlen) {
    return crypto_generichash_update((crypto_generichash_state *)st, in, inlen);
}
static int w_gh_final(void *st, unsigned char *out, size_t outlen) {
    return crypto_generichash_final((crypto_generichash_state *)st, out,
                                    outlen);
}

static int sodium_setup(const char *path) {
    if (path) {
        fprintf(stderr, "bench_src: --sodium needs the -DBENCH_SODIUM_DLOPEN "
                        "build (this one links -lsodium)\n");
        return -1;
    }
    if (sodium_init() < 0)
        return -1;
    g_api.sha256_kind = ZM_SHA256_SODIUM;
    g_api.sha256_ctx_size = crypto_hash_sha256_statebytes();
    g_api.sha256_init = w_sha_init;
    g_api.sha256_update = w_sha_update;
    g_api.sha256_final_sodium = w_sha_final;
    g_api.generichash_statebytes = w_gh_statebytes;
    g_api.generichash_init = w_gh_init;
    g_api.generichash_update = w_gh_update;
    g_api.generichash_final = w_gh_final;
    g_sodium_version = sodium_version_string();
    g_sodium_source = "linked -lsodium (system)";
    openssl_sha256();
    return 0;
}
#endif

/* ========================================================================
 * Operations
 * ======================================================================== */

typedef struct ctx {
    zm_header header;           /* input of the writers */
    uint8_t enc[512];           /* its encoding, input of the reader */
    size_t enc_len;
    zm_header decoded;          /* reader's output */
    uint8_t out[ZM_WIRE_MAX_HEADER];
    int alg;
    zm_slice frames[2];
    uint8_t tag[ZM_MAC_SIZE];
} ctx;

typedef int (*op_fn)(ctx *c);

static volatile size_t g_sink;

static int op_write(ctx *c) {
    size_t written = 0;
    int rc = zm_wire_write(&c->header, c->out, sizeof c->out, &written);
    g_sink = written;
    return rc;
}

static int op_size(ctx *c) {
    g_sink = zm_wire_size(&c->header);
    return ZM_OK;
}

static int op_read(ctx *c) {
    int rc = zm_wire_read(c->enc, c->enc_len, &c->decoded);
    g_sink = c->decoded.n_metadata;
    return rc;
}

static int op_mac_compute(ctx *c) {
    uint8_t mac[ZM_MAC_SIZE];
    int rc = zm_mac_compute(&g_api, c->alg, g_key, sizeof g_key, c->frames, 2,
                            mac);
    g_sink = mac[0];
    return rc;
}

static int op_mac_verify(ctx *c) {
    return zm_mac_verify(&g_api, c->alg, g_key, sizeof g_key, c->frames, 2,
                         c->tag);
}

/* ========================================================================
 * Timing
 * ======================================================================== */

static inline int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

typedef struct opts {
    int64_t batch_ns;   /* calibrate batches to at least this long */
    double max_time;    /* seconds of measurement per operation */
    long min_batches;
    long max_batches;
    double warmup;      /* seconds of warmup per operation */
} opts;

static int64_t run_batch(op_fn fn, ctx *c, long n, int *rc) {
    int64_t t0 = now_ns();
    for (long i = 0; i < n; i++)
        *rc |= fn(c);
    return now_ns() - t0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Linear interpolation between closest ranks (numpy's default). */
static double percentile(const double *sorted, long n, double q) {
    if (n == 1)
        return sorted[0];
    double pos = q * (double)(n - 1);
    long lo = (long)floor(pos);
    if (lo >= n - 1)
        return sorted[n - 1];
    double frac = pos - (double)lo;
    return sorted[lo] + (sorted[lo + 1] - sorted[lo]) * frac;
}

typedef struct result {
    long batch;         /* calls per batch */
    long batches;
    double median, p99, min, mean;
} result;

static int measure(op_fn fn, ctx *c, const opts *o, result *r) {
    int rc = 0;
    long n = 1;
    /* calibrate: grow the batch until it lasts batch_ns */
    for (;;) {
        int64_t t = run_batch(fn, c, n, &rc);
        if (rc)
            return rc;
        if (t >= o->batch_ns || n >= (1L << 30))
            break;
        if (t * 10 >= o->batch_ns && t > 0)
            n = (long)ceil((double)n * (double)o->batch_ns / (double)t);
        else
            n *= 10;
    }
    int64_t end = now_ns() + (int64_t)(o->warmup * 1e9);
    while (now_ns() < end)
        run_batch(fn, c, n, &rc);

    double *per = malloc(sizeof(double) * (size_t)o->max_batches);
    if (!per)
        return -1;
    long k = 0;
    end = now_ns() + (int64_t)(o->max_time * 1e9);
    while (k < o->max_batches && (k < o->min_batches || now_ns() < end))
        per[k++] = (double)run_batch(fn, c, n, &rc) / (double)n;
    if (rc) {
        free(per);
        return rc;
    }
    double sum = 0;
    for (long i = 0; i < k; i++)
        sum += per[i];
    qsort(per, (size_t)k, sizeof *per, cmp_double);
    r->batch = n;
    r->batches = k;
    r->median = percentile(per, k, 0.5);
    r->p99 = percentile(per, k, 0.99);
    r->min = per[0];
    r->mean = sum / (double)k;
    free(per);
    return 0;
}

/* Median cost of one clock_gettime pair, to show it is negligible. */
static double timer_overhead(void) {
    enum { N = 1001 };
    static double d[N];
    for (int i = 0; i < N; i++) {
        int64_t a = now_ns();
        int64_t b = now_ns();
        d[i] = (double)(b - a);
    }
    qsort(d, N, sizeof *d, cmp_double);
    return d[N / 2];
}

/* ========================================================================
 * Main
 * ======================================================================== */

static void hex(FILE *f, const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%02x", p[i]);
}

/* A JSON string literal (paths and compiler versions are plain, but be safe). */
static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

static void usage(void) {
    fprintf(stderr,
            "usage: bench_src [--json] [--only PREFIX] [--sodium PATH]\n"
            "                 [--batch-ns NS] [--max-time S] [--warmup S]\n"
            "                 [--min-batches N] [--max-batches N]\n");
}

typedef struct bench {
    char name[64];
    op_fn fn;
    int header_signed;  /* header used (write/read) */
    int alg;            /* MAC algorithm, 0 for header ops */
    size_t body;        /* MAC body size */
    size_t bytes;       /* header or body bytes, for the report */
} bench;

int main(int argc, char **argv) {
    opts o = {10000, 1.0, 100, 200000, 0.05};
    int json = 0;
    const char *only = NULL, *sodium_path = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--json")) {
            json = 1;
            continue;
        }
        if (!v) {
            usage();
            return 2;
        }
        if (!strcmp(a, "--only"))
            only = v;
        else if (!strcmp(a, "--sodium"))
            sodium_path = v;
        else if (!strcmp(a, "--batch-ns"))
            o.batch_ns = atoll(v);
        else if (!strcmp(a, "--max-time"))
            o.max_time = atof(v);
        else if (!strcmp(a, "--warmup"))
            o.warmup = atof(v);
        else if (!strcmp(a, "--min-batches"))
            o.min_batches = atol(v);
        else if (!strcmp(a, "--max-batches"))
            o.max_batches = atol(v);
        else {
            usage();
            return 2;
        }
        i++;
    }
    if (o.min_batches < 1 || o.max_batches < o.min_batches || o.batch_ns < 1) {
        usage();
        return 2;
    }
    make_data();
    if (sodium_setup(sodium_path) != 0 ||
        zm_mac_supports(&g_api, ZM_MAC_HMAC_SHA256) != ZM_OK ||
        zm_mac_supports(&g_api, ZM_MAC_BLAKE2B) != ZM_OK) {
        fprintf(stderr, "bench_src: libsodium unusable\n");
        return 1;
    }

    /* Encodings of both headers: inputs of the reader, and of the MAC. */
    static uint8_t enc[2][512];
    size_t enc_len[2];
    for (int s = 0; s < 2; s++) {
        zm_header h;
        make_header(&h, s);
        if (zm_wire_write(&h, enc[s], sizeof enc[s], &enc_len[s]) != ZM_OK) {
            fprintf(stderr, "bench_src: cannot encode the header\n");
            return 1;
        }
    }

    static const struct {
        const char *name;
        int id;
    } algs[] = {{"hmac-sha256", ZM_MAC_HMAC_SHA256}, {"blake2b", ZM_MAC_BLAKE2B}};
    static const size_t sizes[] = {64, 4096};
    static const char *kinds[] = {"typical", "signed"};

    bench benches[32];
    int nb = 0;
    for (int s = 0; s < 2; s++) {
        bench *b = &benches[nb++];
        snprintf(b->name, sizeof b->name, "header.write.%s", kinds[s]);
        b->fn = op_write, b->header_signed = s, b->alg = 0, b->bytes = enc_len[s];
    }
    {
        bench *b = &benches[nb++];
        snprintf(b->name, sizeof b->name, "header.size.typical");
        b->fn = op_size, b->header_signed = 0, b->alg = 0, b->bytes = enc_len[0];
    }
    for (int s = 0; s < 2; s++) {
        bench *b = &benches[nb++];
        snprintf(b->name, sizeof b->name, "header.read.%s", kinds[s]);
        b->fn = op_read, b->header_signed = s, b->alg = 0, b->bytes = enc_len[s];
    }
    for (int verify = 0; verify < 2; verify++)
        for (int a = 0; a < 2; a++)
            for (int z = 0; z < 2; z++) {
                bench *b = &benches[nb++];
                snprintf(b->name, sizeof b->name, "mac.%s.%s.%zu",
                         verify ? "verify" : "compute", algs[a].name, sizes[z]);
                b->fn = verify ? op_mac_verify : op_mac_compute;
                b->header_signed = 0, b->alg = algs[a].id, b->body = sizes[z];
                b->bytes = sizes[z];
            }

    static ctx c;
    double tovh = timer_overhead();
    if (json) {
        printf("{\n  \"tool\": \"bench_src\",\n");
        printf("  \"sodium\": {\"version\": ");
        json_str(stdout, g_sodium_version);
        printf(", \"source\": ");
        json_str(stdout, g_sodium_source);
        printf("},\n  \"sha256\": ");
        json_str(stdout, g_sha256_source);
        printf(",\n");
#ifdef __VERSION__
        printf("  \"compiler\": ");
        json_str(stdout, __VERSION__);
        printf(",\n");
#endif
        printf("  \"batch_ns\": %lld, \"max_time\": %g, \"timer_overhead_ns\": %.1f,\n",
               (long long)o.batch_ns, o.max_time, tovh);
        printf("  \"headers\": {\"typical\": \"");
        hex(stdout, enc[0], enc_len[0]);
        printf("\", \"signed\": \"");
        hex(stdout, enc[1], enc_len[1]);
        printf("\"},\n  \"macs\": {");
    } else {
        printf("libsodium %s (%s); SHA-256 for HMAC: %s; clock_gettime pair %.0f ns; "
               "batches >= %lld ns\n", g_sodium_version, g_sodium_source, g_sha256_source,
               tovh, (long long)o.batch_ns);
        printf("%-28s %10s %10s %10s %8s %8s\n", "operation", "median ns",
               "p99 ns", "min ns", "batch", "batches");
    }

    /* MACs of [typical header, body] for the cross-check. */
    int first = 1;
    for (int a = 0; a < 2 && json; a++)
        for (int z = 0; z < 2; z++) {
            zm_slice fr[2] = {{enc[0], enc_len[0]}, {g_body, sizes[z]}};
            uint8_t mac[ZM_MAC_SIZE];
            if (zm_mac_compute(&g_api, algs[a].id, g_key, sizeof g_key, fr, 2,
                               mac) != ZM_OK)
                return 1;
            printf("%s\"mac.compute.%s.%zu\": \"", first ? "" : ", ",
                   algs[a].name, sizes[z]);
            hex(stdout, mac, sizeof mac);
            printf("\"");
            first = 0;
        }
    if (json)
        printf("},\n  \"results\": [");

    first = 1;
    for (int i = 0; i < nb; i++) {
        bench *b = &benches[i];
        if (only && strncmp(b->name, only, strlen(only)) != 0)
            continue;
        make_header(&c.header, b->header_signed);
        memcpy(c.enc, enc[b->header_signed], enc_len[b->header_signed]);
        c.enc_len = enc_len[b->header_signed];
        c.alg = b->alg;
        c.frames[0].ptr = enc[0];
        c.frames[0].len = enc_len[0];
        c.frames[1].ptr = g_body;
        c.frames[1].len = b->body;
        if (b->alg &&
            zm_mac_compute(&g_api, b->alg, g_key, sizeof g_key, c.frames, 2,
                           c.tag) != ZM_OK)
            return 1;
        result r;
        int rc = measure(b->fn, &c, &o, &r);
        if (rc) {
            fprintf(stderr, "bench_src: %s failed: %d %s\n", b->name, rc,
                    rc > 0 ? zm_strerror(rc) : "");
            return 1;
        }
        if (json) {
            printf("%s\n    {\"op\": \"%s\", \"bytes\": %zu, \"batch\": %ld, "
                   "\"batches\": %ld, \"median_ns\": %.2f, \"p99_ns\": %.2f, "
                   "\"min_ns\": %.2f, \"mean_ns\": %.2f, \"sodium\": %s}",
                   first ? "" : ",", b->name, b->bytes, r.batch, r.batches,
                   r.median, r.p99, r.min, r.mean, b->alg ? "true" : "false");
        } else {
            printf("%-28s %10.1f %10.1f %10.1f %8ld %8ld\n", b->name, r.median,
                   r.p99, r.min, r.batch, r.batches);
        }
        fflush(stdout);
        first = 0;
    }
    if (json)
        printf("\n  ]\n}\n");
    return 0;
}
