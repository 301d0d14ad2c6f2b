# cython: language_level=3
#
# The zmicro._core extension: one .pxd/.pyx pair per concern, included here
# (as uvloop does) so hot calls cross no module boundary. Each file says at
# its top what it uses; the .pxd files (core/zmicro/_core.pxd) declare every
# class and the functions other files call, so the order below matters only
# for module-level statements: native.pyx resolves libzmq and libsodium at
# import, before anything can call them.

cimport cython
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy, memset
from cpython.buffer cimport (PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE,
                             PyObject_CheckBuffer)
from cpython.contextvars cimport PyContextVar_Set, PyContextVar_Reset
from cpython.set cimport PySet_Discard
from cpython.contextvars cimport get_value as contextvar_get
from cpython.bytes cimport (PyBytes_FromStringAndSize, PyBytes_AS_STRING,
                            PyBytes_GET_SIZE)

from includes.libzmq cimport *
from includes.src cimport *

include "native.pyx"     # libzmq, libsodium, OpenSSL found through pyzmq and Python
include "errors.pyx"     # native codes -> exceptions; the error types and codes
include "buffers.pyx"    # Python buffers as zm_slices
include "wire.pyx"       # Header objects <-> wire bytes
include "context.pyx"    # the per-request Context, monotonic()
include "socket.pyx"     # waiting and receiving on libzmq sockets
include "mac.pyx"        # MACs and random bytes for Python
include "keyring.pyx"    # MAC keys, signing and checking, nonce sets
include "codecs.pyx"     # codecs as the core uses them
include "message.pyx"    # the message layer: build, sign, send, receive, check
include "frame.pyx"      # messages as Python objects (send_message, recv_message)
include "events.pyx"     # event frames: encode_event, EventInbox (the subscriber's checks)
include "subscriber.pyx" # a subscription's per-event path: EventGlue, EventContext
include "server.pyx"     # a service's receive loop and dispatch
include "selector.pyx"   # balancers: node choice, ejection
include "retry.pyx"      # retry policy, budget, hedging, the retry decision
include "channel.pyx"    # a client's connection to one node (sync and async)
include "pool.pyx"       # a client's channels, bounded
include "client.pyx"     # the client call path
include "outbox.pyx"     # the embedded publisher's fast path (DeliveryEngine's base)
