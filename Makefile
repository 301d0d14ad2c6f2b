# The few targets a contributor needs. Everything runs in .venv (made on
# first use by scripts/_env.sh).
.PHONY: test demo debug sanitize fuzz bench bench-smoke wheels ci clean

test:            ## build, install and run the tests
	bash scripts/test.sh

demo:            ## the README demo
	bash scripts/demo.sh

debug:           ## ZMICRO_DEBUG build: asserts, line tracing, annotated HTML
	ZMICRO_DEBUG=1 bash scripts/test.sh -x -q

sanitize:        ## ASan/UBSan build of the extension, then the tests
	ZMICRO_SANITIZE=1 ZMICRO_EXTRAS=test bash -c 'source scripts/_env.sh'
	LD_PRELOAD="$$(clang -print-file-name=libclang_rt.asan-x86_64.so)" \
	  ASAN_OPTIONS=detect_leaks=0 .venv/bin/python -m pytest -x -q tests

fuzz:            ## every fuzzer, 60 s each (needs clang, libclang-rt-14-dev, libsodium-dev)
	PYTHON=$(CURDIR)/.venv/bin/python bash fuzz/run.sh 60

bench:           ## micro, end-to-end and callgrind benchmarks, recorded into bench/RESULTS.md
	.venv/bin/python bench/run_micro.py --record
	.venv/bin/python bench/e2e/run.py --record
	.venv/bin/python bench/callgrind/run.py --record

bench-smoke:     ## every benchmark harness for a few calls (what CI runs)
	.venv/bin/python bench/run_micro.py --smoke
	.venv/bin/python bench/e2e/run.py --smoke
	.venv/bin/python bench/cluster/run.py --smoke
	.venv/bin/python bench/callgrind/run.py --smoke

wheels:          ## sdist + manylinux_2_17 wheels in dist/ (zig cc), each checked without a compiler
	bash scripts/build-wheels.sh
	bash scripts/check-wheels.sh

ci:              ## what CI runs
	bash .ci/run

clean:
	rm -rf build dist python/*.egg-info fuzz/build fuzz/work bench/build
	find python -name '*.so' -delete
