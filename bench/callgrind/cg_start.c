/* cg_start.c - callgrind's "start instrumentation" client request, callable
 * from Python through ctypes.
 *
 * bench/callgrind/run.py starts the zmicro processes under callgrind with
 * --instr-atstart=no: the interpreter's start-up and imports (some 750
 * million instructions, half a minute under callgrind) then run at
 * valgrind's uninstrumented speed, and workload.py calls cg_start() at a
 * fixed point (the client after its "go", the server before it builds its
 * Service). Outside valgrind the request is a no-op.
 *
 *   cc -O2 -shared -fPIC bench/callgrind/cg_start.c -o libcgstart.so
 */
#include <valgrind/callgrind.h>

void cg_start(void) { CALLGRIND_START_INSTRUMENTATION; }
