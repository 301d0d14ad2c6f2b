# The zmicro._core extension (the dotted name is how Cython finds the .pxd
# of a module compiled from core/_core.pyx): one module, one .pxd/.pyx pair
# per concern included here (as uvloop does), so hot calls cross no module
# boundary.

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

from includes.libzmq cimport *
from includes.src cimport *

include "wire.pxd"
include "frame.pxd"
