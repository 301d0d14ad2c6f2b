"""The README's first command runs examples/demo.py: a service in one
process, calls and events to it from another. It must keep working."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

from ..processes import private_dir
from .test_logging import ROOT, env_for


def test_the_demo_calls_and_publishes(tmp_path_factory):
    registry_dir = private_dir(tmp_path_factory, "registry")
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "demo.py"), "-n", "20"],
                          cwd=ROOT, env=env_for(registry_dir), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "sync:  {'message': 'Hello Ada'}" in out, out
    assert re.search(r"^20 async calls: p50 \d+ µs", out, re.M), out
    handled = re.search(r"^events: published (\[.*\]) to 'greeter.visited'; the greeter's "
                        r"subscriber handled (\[.*\])$", out, re.M)
    assert handled is not None, out
    assert sorted(ast.literal_eval(handled.group(1))) == sorted(ast.literal_eval(handled.group(2))), out
    assert "nodes left in the registry: 0" in out, out
