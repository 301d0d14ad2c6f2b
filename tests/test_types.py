"""The package's type annotations hold, and a user's code checks against them.

- ``mypy`` over python/zmicro with the configuration in pyproject.toml
  (``[tool.mypy]``: strict) reports nothing;
- ``mypy --strict`` passes on the README's Python code blocks and on
  examples/*.py, checked against the *installed* package (its ``py.typed``
  and ``_core.pyi``), as a user's project would be;
- a decorated handler keeps its type: misusing it is an error mypy reports.

mypy runs in ``tmp_path`` so its cache stays out of the checkout.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# examples/cluster_demo.py imports tests.etcd_server (found through
# mypy_path); the examples are checked, not the test helpers they borrow.
_USER_CONFIG = f"""\
[mypy]
strict = True
mypy_path = {ROOT}

[mypy-tests.*]
follow_imports = silent
"""


def _mypy(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mypy", "--no-color-output", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=600)


def _as_user(tmp_path: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "mypy.ini"
    config.write_text(_USER_CONFIG)
    return _mypy(tmp_path, "--config-file", str(config), *map(str, files))


def readme_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)


def test_package_is_clean(tmp_path):
    proc = _mypy(tmp_path, "--config-file", str(ROOT / "pyproject.toml"),
                 str(ROOT / "python" / "zmicro"))
    assert proc.returncode == 0, f"mypy python/zmicro:\n{proc.stdout}{proc.stderr}"


def test_readme_and_examples_pass_strict(tmp_path):
    blocks = readme_blocks()
    assert blocks, "README.md has no ```python block"
    files = []
    for i, block in enumerate(blocks):
        files.append(tmp_path / f"readme_{i}.py")
        files[-1].write_text(block)
    examples = sorted((ROOT / "examples").glob("*.py"))
    assert ROOT / "examples" / "greeter.py" in examples
    proc = _as_user(tmp_path, *files, *examples)
    assert proc.returncode == 0, f"mypy --strict:\n{proc.stdout}{proc.stderr}"
    assert f"in {len(files) + len(examples)} source files" in proc.stdout, proc.stdout


def test_a_decorated_handler_keeps_its_type(tmp_path):
    user = tmp_path / "user.py"
    user.write_text(
        "import msgspec, zmicro\n"
        "class Reply(msgspec.Struct):\n"
        "    text: str\n"
        "svc = zmicro.Service('s')\n"
        "@svc.handler('S.Hello', blocking=True)\n"
        "def hello(req: str, ctx: zmicro.Context) -> Reply:\n"
        "    return Reply(text=req)\n"
        "@svc.handler()\n"
        "@zmicro.blocking\n"
        "async def wave(req: str, ctx: zmicro.Context) -> int:\n"
        "    return 1\n"
        "def use(ctx: zmicro.Context) -> None:\n"
        "    ok: Reply = hello('x', ctx)\n"
        "    wrong: int = hello('x', ctx)\n"
        "    hello(1, ctx)\n"
        "    wave('x', ctx).close()\n"
        "    err = zmicro.RPCError(zmicro.Code.NOT_FOUND)\n"
        "    code: zmicro.Code = err.code\n")
    proc = _as_user(tmp_path, user)
    errors = [line for line in proc.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 2, proc.stdout + proc.stderr
    assert 'user.py:14: error: Incompatible types in assignment (expression has type "Reply"' \
        in errors[0]
    assert 'user.py:15: error: Argument 1 to "hello" has incompatible type "int"' in errors[1]
