# cython: language_level=3
#
# The zmicro._core extension. Order matters: native.pyx resolves libzmq and
# libsodium at import, before anything can call them.

cimport cython
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy, memset
from cpython.buffer cimport (PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE,
                             PyObject_CheckBuffer)
from cpython.contextvars cimport PyContextVar_Set, PyContextVar_Reset
from cpython.contextvars cimport get_value as contextvar_get
from cpython.bytes cimport (PyBytes_FromStringAndSize, PyBytes_AS_STRING,
                            PyBytes_GET_SIZE)

from includes.libzmq cimport *
from includes.src cimport *

include "native.pyx"
include "errors.pyx"
include "buffers.pyx"
include "wire.pyx"
include "context.pyx"
include "socket.pyx"
include "mac.pyx"
include "codecs.pyx"
include "frame.pyx"
include "keyring.pyx"
include "server.pyx"
include "selector.pyx"
include "client.pyx"
