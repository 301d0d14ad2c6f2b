"""pytest configuration of the micro benchmarks (bench/micro).

Makes ``bench/data.py`` importable as ``data`` and skips the directory
cleanly when pytest-benchmark is missing. Run through ``bench/run_micro.py``
for the combined C/Python table, or directly:

    python -m pytest bench/micro --benchmark-columns=median,iqr,rounds
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parent.parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

pytest.importorskip("pytest_benchmark", reason="pip install pytest-benchmark")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "baseline: a comparison row, not zmicro's own code path"
    )
