"""What the installed package is made of."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import zmicro
from zmicro import _core, wire
import zmicro.auth as zmicro_auth


def test_extension_links_no_libzmq_or_libsodium():
    """The core calls pyzmq's libzmq through dlsym; linking one would load a
    second copy (and make auditwheel bundle it)."""
    if not shutil.which("readelf"):
        pytest.fail("readelf (binutils) is needed to inspect the extension")
    out = subprocess.run(["readelf", "-d", _core.__file__], capture_output=True,
                         text=True, check=True).stdout
    needed = [line.split("[")[1].rstrip("]") for line in out.splitlines() if "(NEEDED)" in line]
    assert needed, out
    assert not [n for n in needed if "zmq" in n or "sodium" in n], needed


def test_package_data_installed():
    assert wire.SCHEMA.read_text().count("struct Header") == 1
    pkg = Path(zmicro.__file__).parent
    assert (pkg / "py.typed").is_file() and (pkg / "_core.pyi").is_file()


def test_public_names():
    for name in zmicro.__all__:
        assert hasattr(zmicro, name), name
    for mod in (zmicro.wire, zmicro.mac, zmicro.errors, zmicro_auth, zmicro.security):
        for name in mod.__all__:
            assert hasattr(mod, name), (mod.__name__, name)


def test_message_not_constructible():
    with pytest.raises(TypeError):
        zmicro.Message()


def test_every_subpackage_is_installed():
    """Subpackages ship too (a hand-written package list once missed
    zmicro.registry, which an editable install hid)."""
    source = Path(__file__).resolve().parents[1] / "python" / "zmicro"
    installed = Path(zmicro.__file__).parent
    for init in source.rglob("__init__.py"):
        assert (installed / init.relative_to(source)).is_file(), init
    # A directory of modules without __init__.py is a namespace package that
    # find_packages() skips: it works in a checkout, and is missing from the
    # wheel (zmicro.auth once was).
    for module in source.rglob("*.py"):
        if "__pycache__" in module.parts:
            continue
        assert (module.parent / "__init__.py").is_file(), module.parent


def test_no_module_is_installed_without_its_source():
    """A module moved or removed in python/ must not stay installed from an
    old build (setuptools never cleans build/lib): its old import path would
    keep working here and fail everywhere else."""
    source = Path(__file__).resolve().parents[1] / "python" / "zmicro"
    installed = Path(zmicro.__file__).parent
    for module in [*installed.rglob("*.py"), *installed.rglob("*.pyi")]:
        assert (source / module.relative_to(installed)).is_file(), module
