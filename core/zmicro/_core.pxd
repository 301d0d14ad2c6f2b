# The zmicro._core extension, compiled from core/_core.pyx (Cython finds a
# module's .pxd by its package path under the include path "core"): one
# module, one .pxd/.pyx pair per concern included here (as uvloop does), so
# hot calls cross no module boundary.

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t

from includes.libzmq cimport *
from includes.src cimport *

include "buffers.pxd"
include "wire.pxd"
include "context.pxd"
include "socket.pxd"
include "codecs.pxd"
include "keyring.pxd"
include "message.pxd"
include "frame.pxd"
include "events.pxd"
include "subscriber.pxd"
include "server.pxd"
include "selector.pxd"
include "retry.pxd"
include "channel.pxd"
include "pool.pxd"
include "client.pxd"
include "outbox.pxd"
