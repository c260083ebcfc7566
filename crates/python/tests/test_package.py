"""The installed package: it carries its servers, finds them itself, and has its types."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import bitbridge
from bitbridge import ctypes as bct
from conftest import build


def test_the_wheel_carries_both_servers() -> None:
    d = Path(bitbridge.__file__).with_name("_servers")
    for arch in ("i686", "x86_64"):
        p = d / f"bitbridge-server-{arch}"
        assert p.is_file() and p.stat().st_mode & stat.S_IXUSR, p
    assert (Path(bitbridge.__file__).with_name("py.typed")).exists()


def test_the_packaged_server_is_the_one_used() -> None:
    env = {k: v for k, v in os.environ.items() if k.startswith("BITBRIDGE_SERVER")}
    assert not env, f"the suite must use the packaged servers, not {env}"
    lib = bct.CDLL(build("edge", 32))
    exe = os.readlink(f"/proc/{lib.server.pid}/exe")
    assert Path(exe).parent == Path(bitbridge.__file__).with_name("_servers").resolve()
    assert lib.server.target == "i686"


def test_version() -> None:
    assert bitbridge.__version__.count(".") == 2


def test_the_drop_in_module_overrides_what_differs_and_keeps_the_rest() -> None:
    import ctypes

    assert bct.WINFUNCTYPE is not None  # in ctypes only on Windows; here for stdcall libraries

    for name in (
        "CDLL",
        "CFUNCTYPE",
        "POINTER",
        "Structure",
        "Union",
        "sizeof",
        "cast",
        "c_long",
        "c_size_t",
    ):
        assert getattr(bct, name) is not getattr(ctypes, name), name
    for name in (
        "c_int",
        "c_double",
        "byref",
        "pointer",
        "create_string_buffer",
        "create_unicode_buffer",
        "c_char_p",
        "memmove",
    ):
        assert getattr(bct, name) is getattr(ctypes, name), name
    assert bct.CDLL is bitbridge.CDLL
    assert set(bct.__all__) >= {n for n in dir(ctypes) if not n.startswith("_")}
