"""The differential harness: each case runs with plain in-process ``ctypes`` on the 64-bit build of its C
fixture (the reference) and with ``bitbridge.ctypes`` on the 32-bit build (an i686 server) and on the
64-bit build (an x86_64 server); the answers must agree.

The suite runs against the *installed* ``bitbridge`` package (``./x pytest`` installs the wheel into a
fresh venv and runs from outside the source tree); fixtures are compiled here with ``gcc -m32``/``-m64``.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bitbridge
import bitbridge.ctypes as bctypes
import pytest

ROOT = Path(os.environ.get("BITBRIDGE_ROOT", Path(__file__).resolve().parents[3]))
FIXTURES = ROOT / "fixtures"
BUILD = Path(tempfile.mkdtemp(prefix="bitbridge-pytest-"))

assert "site-packages" in bitbridge.__file__, (
    f"the suite must test the installed package, not {bitbridge.__file__}"
)


def build(name: str, bits: int) -> str:
    """``fixtures/<name>.c`` (or ``tests/<name>.c``) compiled as a shared library for ``bits``."""
    out = BUILD / f"lib{name}{bits}.so"
    if not out.exists():
        src = next(
            FIXTURES / f"{name}{ext}"
            for ext in (".c", ".cpp", ".f90")
            if (FIXTURES / f"{name}{ext}").exists()
        )
        compiler = {".c": "gcc", ".cpp": "g++", ".f90": "gfortran"}[src.suffix]
        libs = ["-lm", "-lpthread"] if src.suffix == ".c" else []
        subprocess.run(
            [compiler, f"-m{bits}", "-shared", "-fPIC", "-O1", "-o", str(out), str(src), *libs], check=True
        )
    return str(out)


def build_windll(name: str, bits: int) -> str:
    """``fixtures/<name>.c`` compiled as a Windows DLL for ``bits`` with mingw-w64
    (``i686-w64-mingw32-gcc``/``x86_64-w64-mingw32-gcc``, installed by ``./x wine``); a missing
    compiler fails the test."""
    out = BUILD / f"{name}{bits}.dll"
    if not out.exists():
        compiler = {32: "i686-w64-mingw32-gcc", 64: "x86_64-w64-mingw32-gcc"}[bits]
        src = FIXTURES / f"{name}.c"
        subprocess.run([compiler, "-shared", "-O1", "-Wall", "-o", str(out), str(src)], check=True)
    return str(out)


class Backend:
    """One way of running a case: which ctypes module, which build of the fixtures."""

    def __init__(self, name: str, ct: Any, bits: int) -> None:
        self.name, self.ct, self.bits = name, ct, bits
        self._libs: dict[str, Any] = {}

    def load(self, name: str, fresh: bool = False, **options: Any) -> Any:
        """The fixture library ``name`` (cached per backend), or a fresh one (in a server of its own)
        with options, for tests that crash or stop their server."""
        if options or fresh:
            return self.ct.CDLL(build(name, self.bits), **options)
        if name not in self._libs:
            self._libs[name] = self.ct.CDLL(build(name, self.bits))
        return self._libs[name]

    def libc(self) -> Any:
        if self.ct is ctypes:
            return ctypes.CDLL("libc.so.6", use_errno=True)
        return self.ct.CDLL("libc.so.6", arch="i686" if self.bits == 32 else "x86_64", use_errno=True)

    def libm(self) -> Any:
        if self.ct is ctypes:
            return ctypes.CDLL("libm.so.6")
        return self.ct.CDLL("libm.so.6", arch="i686" if self.bits == 32 else "x86_64")

    @property
    def is_bitbridge(self) -> bool:
        return self.ct is not ctypes

    def __repr__(self) -> str:
        return self.name


REFERENCE = Backend("ctypes x86_64 in-process", ctypes, 64)
BRIDGED = [Backend("bitbridge i686 server", bctypes, 32), Backend("bitbridge x86_64 server", bctypes, 64)]


@pytest.fixture(scope="session")
def backends() -> list[Backend]:
    return [REFERENCE, *BRIDGED]


@pytest.fixture
def agree(backends: list[Backend]) -> Callable[[Callable[[Backend], Any]], Any]:
    """``agree(case)`` runs ``case(backend)`` on every backend, asserts every answer equals the
    reference's (in-process ctypes), and returns it."""

    def run(case: Callable[[Backend], Any]) -> Any:
        expected = case(REFERENCE)
        for b in BRIDGED:
            got = case(b)
            assert got == expected, f"{b}: {got!r}, but ctypes in-process gives {expected!r}"
        return expected

    return run


@pytest.fixture(params=BRIDGED, ids=lambda b: b.name.split()[1])
def bridged(request: Any) -> Backend:
    """Each bitbridge backend in turn (for what has no in-process reference: crashes, timeouts)."""
    return request.param


def no_server_left(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        stat = Path(f"/proc/{pid}/stat").read_text().split()
        assert stat[2] == "Z", f"server {pid} is still running"


sys.dont_write_bytecode = True
