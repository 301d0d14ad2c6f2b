"""The type stub of the compiled core, python/zmicro/_core.pyi, matches the
built module.

mypy's stubtest imports zmicro._core and compares it with the stub: every
public name of the module and of its classes must be in the stub, nothing
in the stub may be missing at runtime, and functions and methods must have
the signatures Cython embeds (setup.py: embedsignature).
tests/stubtest_allowlist.txt lists, each with its reason, what stubtest
cannot check on a Cython module.

Two things stubtest cannot see on a cdef class are checked here from what
Cython leaves instead:

- ``__init__`` is a slot wrapper without a readable signature: its
  parameters (names, in order, and which have defaults) are compared with
  the signature Cython embeds in the class docstring;
- fields (``cdef readonly`` / ``cdef public`` in core/*.pxd, the spec of
  each class) are descriptors stubtest cannot type: a readonly field must
  be a property of the stub, a public one an attribute, of the Python type
  of its C type.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import types
from pathlib import Path

from zmicro import _core

ROOT = Path(__file__).resolve().parents[1]
STUB = ROOT / "python" / "zmicro" / "_core.pyi"
CONFIG = ROOT / "tests" / "stubtest.ini"
ALLOWLIST = ROOT / "tests" / "stubtest_allowlist.txt"


def test_stubtest(tmp_path):
    # cwd: mypy's cache goes there, not into the checkout.
    proc = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "--mypy-config-file", str(CONFIG),
         "--allowlist", str(ALLOWLIST), "zmicro._core"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"stubtest:\n{proc.stdout}{proc.stderr}"


def _stub_classes() -> dict[str, ast.ClassDef]:
    tree = ast.parse(STUB.read_text(), filename=str(STUB))
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


def _split_params(text: str) -> list[str]:
    """`text` split at the commas outside brackets and quotes."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _embedded_init(cls: type) -> list[tuple[str, bool]]:
    """(name, has a default) of each parameter of `cls`'s __init__, from
    the signature Cython puts on the docstring's first line
    ("Name(uint32_t id, int alg, secret)"). Its "*" is not used: Cython
    places it one parameter late (it counts self)."""
    first = (cls.__doc__ or "").split("\n", 1)[0]
    match = re.fullmatch(rf"{cls.__name__}\((.*)\)", first)
    assert match, f"{cls.__name__}: no embedded signature in its docstring: {first!r}"
    params = []
    for param in _split_params(match.group(1)):
        if param == "*":
            continue
        declared, eq, _ = param.partition("=")
        params.append((declared.split()[-1], bool(eq)))
    return params


def _stub_init(node: ast.ClassDef) -> list[tuple[str, bool]]:
    for item in node.body:
        if isinstance(item, ast.FunctionDef) and item.name == "__init__":
            a = item.args
            positional = [*a.posonlyargs, *a.args]
            first_default = len(positional) - len(a.defaults)
            params = [(p.arg, i >= first_default) for i, p in enumerate(positional)][1:]
            params += [(p.arg, d is not None) for p, d in zip(a.kwonlyargs, a.kw_defaults)]
            return params
    return []  # object's


def test_init_signatures():
    stubs = _stub_classes()
    checked, wrong = [], []
    for name, cls in vars(_core).items():
        if (name.startswith("_") or not isinstance(cls, type)
                or cls.__module__ != _core.__name__
                or not isinstance(vars(cls).get("__init__"), types.WrapperDescriptorType)):
            continue
        checked.append(name)
        if name not in stubs:
            wrong.append(f"{name} is not in the stub")
        elif (stub := _stub_init(stubs[name])) != (runtime := _embedded_init(cls)):
            wrong.append(f"{name}.__init__: the stub has (name, default?) {stub},\n"
                         f"    the core {runtime}")
    assert "Keyring" in checked and "ServerCore" in checked, checked
    assert not wrong, "\n".join(wrong)


_FIELD = re.compile(r"\s+cdef (readonly|public) (\w+) (\w+(?:\s*,\s*\w+)*)\s*(?:#.*)?")
_C_INTS = re.compile(r"u?int(8|16|32|64)?(_t)?|size_t|Py_ssize_t|long")


def _pxd_fields() -> dict[tuple[str, str], tuple[str, str]]:
    """(class, field) -> (readonly or public, C type) of every field of a
    public class that Python sees, from core/*.pxd."""
    fields = {}
    for pxd in sorted((ROOT / "core").glob("*.pxd")):
        cls = None
        for line in pxd.read_text().splitlines():
            if match := re.match(r"cdef class (\w+)", line):
                cls = match.group(1)
            elif cls and not cls.startswith("_") and (match := _FIELD.fullmatch(line)):
                access, ctype, names = match.groups()
                for name in re.split(r"\s*,\s*", names):
                    if not name.startswith("_"):
                        fields[cls, name] = (access, ctype)
    return fields


def _python_type(ctype: str) -> str | None:
    """The stub's type of a field of C type `ctype` (None: any)."""
    if _C_INTS.fullmatch(ctype):
        return "int"
    return {"double": "float", "float": "float", "bint": "bool", "object": None}.get(ctype, ctype)


def test_fields():
    stubs = _stub_classes()
    fields = _pxd_fields()
    assert ("Header", "service") in fields and ("RetryPolicy", "jitter") in fields
    wrong = []
    for (cls, name), (access, ctype) in sorted(fields.items()):
        attributes, properties, setters = {}, {}, set()
        for item in stubs[cls].body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                attributes[item.target.id] = item.annotation
            elif isinstance(item, ast.FunctionDef):
                for deco in item.decorator_list:
                    if isinstance(deco, ast.Name) and deco.id == "property":
                        properties[item.name] = item.returns
                    elif isinstance(deco, ast.Attribute) and deco.attr == "setter":
                        setters.add(item.name)
        if access == "readonly" and (name not in properties or name in setters):
            wrong.append(f"{cls}.{name} is readonly: a property without setter")
            continue
        if access == "public" and name not in attributes:
            wrong.append(f"{cls}.{name} is public: an attribute")
            continue
        annotation = attributes.get(name) or properties[name]
        expected = _python_type(ctype)
        # "str | None", "dict[str, bytes]": the C type says what comes first
        found = re.split(r"[\[ |]", ast.unparse(annotation))[0] if annotation else None
        if expected is not None and found != expected:
            wrong.append(f"{cls}.{name} is {ctype} in the .pxd: {expected}, not {found}")
    assert not wrong, "\n".join(wrong)
