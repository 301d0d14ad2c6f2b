# native.pyx - find libzmq, libsodium and OpenSSL's SHA-256 inside this
# process, through the modules that already loaded them.
#
# pyzmq's wheels bundle libzmq (and the libsodium it links) under mangled
# names in pyzmq.libs/. dlopen(<pyzmq's backend module>, RTLD_NOLOAD) returns
# a handle to the already-loaded backend, and dlsym on that handle searches
# its dependencies too, so we find exactly the libzmq that pyzmq uses and
# never link or load a second one (auditwheel shows no libzmq in our NEEDED).
# The same trick on Python's _hashlib finds the libcrypto it loaded.
#
# Uses: includes/native.h (the pointer tables and dlsym helpers) only.

import os as _os

cdef zm_zmq ZMQ                       # libzmq functions
cdef zm_crypto CRYPTO                 # crypto primitives for src/zm_mac.c
cdef zm_randombytes_fn RANDOMBYTES = NULL
cdef bint HAVE_SODIUM = False         # libsodium found (BLAKE2b, random bytes)
cdef bint C_HMAC = False              # HMAC-SHA256 in C (OpenSSL or libsodium SHA-256)
cdef bint C_BLAKE2B = False           # keyed BLAKE2b in C (libsodium)

MIN_LIBZMQ = (4, 3, 3)


def _check_libzmq_version(version):
    """Refuse libzmq releases with known remote vulnerabilities."""
    if tuple(version) < MIN_LIBZMQ:
        found = ".".join(map(str, version))
        raise ImportError(
            f"zmicro needs libzmq >= 4.3.3 (older releases have remote "
            f"vulnerabilities: CVE-2019-13132, CVE-2020-15166); the pyzmq in "
            f"this environment uses libzmq {found}. Upgrade pyzmq "
            f"(pip install -U pyzmq).")


cdef int _load_native() except -1:
    cdef int major = 0, minor = 0, patch = 0
    cdef const char *missing
    cdef void *handle

    try:
        from zmq.backend.cython import _zmq as backend
    except ImportError as exc:
        raise ImportError(
            "zmicro needs pyzmq >= 26 with its Cython backend "
            "(pip install -U pyzmq)") from exc
    path = _os.fsencode(backend.__file__)
    handle = dlopen(path, RTLD_NOW | RTLD_NOLOAD)
    if handle == NULL:
        raise ImportError(
            f"zmicro cannot find pyzmq's libzmq: dlopen({path!r}) failed: "
            f"{(<bytes>dlerror()).decode(errors='replace')}")
    missing = zm_native_load_zmq(handle, &ZMQ)
    if missing != NULL:
        raise ImportError(
            f"zmicro cannot use pyzmq's libzmq: symbol "
            f"{(<bytes>missing).decode()} not found")
    ZMQ.version(&major, &minor, &patch)
    _check_libzmq_version((major, minor, patch))
    _load_crypto(handle)
    return 0


cdef int _load_crypto(void *handle) except -1:
    global HAVE_SODIUM, C_HMAC, C_BLAKE2B, RANDOMBYTES
    cdef zm_sodium_init_fn sodium_init = NULL
    cdef size_t (*sha256_statebytes)() noexcept nogil
    cdef void *ssl
    memset(&CRYPTO, 0, sizeof(CRYPTO))
    # OpenSSL's SHA-256 first: it uses the CPU's SHA instructions. It is the
    # libcrypto Python's _hashlib already loaded (nothing new is loaded).
    # ZMICRO_NO_OPENSSL=1 / ZMICRO_NO_SODIUM=1 turn either off (tests).
    if _os.environ.get("ZMICRO_NO_OPENSSL", "") in ("", "0"):
        try:
            import _hashlib
            ssl = dlopen(_os.fsencode(_hashlib.__file__), RTLD_NOW | RTLD_NOLOAD)
            if ssl != NULL:
                zm_native_load_openssl(ssl, &CRYPTO)
        except ImportError:
            pass
    if _os.environ.get("ZMICRO_NO_SODIUM", "") in ("", "0"):
        if (zm_native_load_sodium(handle, &CRYPTO, &RANDOMBYTES, &sodium_init,
                                  &sha256_statebytes) == NULL
                and sodium_init() >= 0):
            HAVE_SODIUM = True
    if not HAVE_SODIUM:
        RANDOMBYTES = NULL
        CRYPTO.generichash_statebytes = NULL
    C_HMAC = zm_mac_supports(&CRYPTO, ZM_MAC_HMAC_SHA256) == ZM_OK
    C_BLAKE2B = zm_mac_supports(&CRYPTO, ZM_MAC_BLAKE2B) == ZM_OK
    return 0


_load_native()


def libzmq_version():
    """The version of the libzmq the core calls, as (major, minor, patch)."""
    cdef int major = 0, minor = 0, patch = 0
    ZMQ.version(&major, &minor, &patch)
    return (major, minor, patch)


def have_sodium():
    """True when pyzmq's libsodium was found (keyed BLAKE2b, random bytes)."""
    return HAVE_SODIUM


def mac_backends():
    """Who computes each MAC algorithm: "openssl", "libsodium" or "python"."""
    sha = {ZM_SHA256_OPENSSL: "openssl", ZM_SHA256_SODIUM: "libsodium"}.get(
        CRYPTO.sha256_kind, "python")
    return {"hmac-sha256": sha if C_HMAC else "python",
            "blake2b": "libsodium" if C_BLAKE2B else "python"}
