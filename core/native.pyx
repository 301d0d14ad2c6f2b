# native.pyx - find libzmq and libsodium inside this process, through pyzmq.
#
# pyzmq's wheels bundle libzmq (and the libsodium it links) under mangled
# names in pyzmq.libs/. dlopen(<pyzmq's backend module>, RTLD_NOLOAD) returns
# a handle to the already-loaded backend, and dlsym on that handle searches
# its dependencies too, so we find exactly the libzmq that pyzmq uses and
# never link or load a second one (auditwheel shows no libzmq in our NEEDED).

import os as _os

cdef zm_zmq ZMQ                       # libzmq functions
cdef zm_sodium SODIUM                 # libsodium functions for src/zm_mac.c
cdef zm_randombytes_fn RANDOMBYTES = NULL
cdef bint HAVE_SODIUM = False         # False: MACs computed by hashlib/hmac

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
    global HAVE_SODIUM
    cdef int major = 0, minor = 0, patch = 0
    cdef const char *missing
    cdef zm_sodium_init_fn sodium_init = NULL
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

    # ZMICRO_NO_SODIUM=1 forces the hashlib/hmac path (tests, debugging).
    if _os.environ.get("ZMICRO_NO_SODIUM", "") not in ("", "0"):
        return 0
    if zm_native_load_sodium(handle, &SODIUM, &RANDOMBYTES, &sodium_init) != NULL:
        return 0
    if sodium_init() < 0 or zm_mac_check(&SODIUM) != ZM_OK:
        return 0
    HAVE_SODIUM = True
    return 0


_load_native()


def libzmq_version():
    """The version of the libzmq the core calls, as (major, minor, patch)."""
    cdef int major = 0, minor = 0, patch = 0
    ZMQ.version(&major, &minor, &patch)
    return (major, minor, patch)


def have_sodium():
    """True when MACs are computed by libsodium in C with the GIL released."""
    return HAVE_SODIUM
