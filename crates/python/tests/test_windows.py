"""Windows DLLs from Python, the ctypes way: ``fixtures/windll.c`` built with mingw-w64 for both
bitnesses and ``kernel32.dll`` itself, hosted by the wheel's ``bitbridge-server.exe`` under Wine (the
loaders ``BITBRIDGE_WINE_I686``/``BITBRIDGE_WINE_X86_64``, exported by ``./x pytest``). Nothing here
is skipped: without Wine or mingw-w64 these tests fail."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import bitbridge
import bitbridge.ctypes as bct
import pytest
from conftest import build_windll

ARCH = {32: "i686", 64: "x86_64"}
TARGET = {32: "win32", 64: "win64"}


@pytest.fixture(scope="module", params=[32, 64], ids=["win32", "win64"])
def windll(request: Any) -> Iterator[tuple[Any, int]]:
    """The fixture DLL of each bitness in a Windows server of its own (one per module)."""
    bits = request.param
    lib = bitbridge.WinDLL(build_windll("windll", bits))
    yield lib, bits
    lib.server.shutdown()


class Sample(bct.Structure):
    _fields_ = [("id", bct.c_int), ("value", bct.c_double), ("tag", bct.c_char)]


class SYSTEMTIME(bct.Structure):
    _fields_ = [
        (n, bct.c_ushort)  # WORD
        for n in (
            "wYear",
            "wMonth",
            "wDayOfWeek",
            "wDay",
            "wHour",
            "wMinute",
            "wSecond",
            "wMilliseconds",
        )
    ]


def test_a_pe_dll_runs_in_the_windows_server_of_its_bitness(windll: tuple[Any, int]) -> None:
    lib, bits = windll
    assert lib.server.target == TARGET[bits]
    assert bitbridge.CDLL(build_windll("windll", bits)).add(2, 40) == 42


def test_stdcall_functions(windll: tuple[Any, int]) -> None:
    lib, _ = windll
    add_std = lib.add_std  # on win32 the export is add_std@8: found at the first call
    add_std.argtypes = [bct.c_int, bct.c_int]
    add_std.restype = bct.c_int
    assert add_std(2, 3) == 5
    scale = lib.scale_std
    scale.argtypes = [bct.c_double, bct.c_int, bct.c_double]
    scale.restype = bct.c_double
    assert scale(1.5, 4, 0.25) == 6.25


def test_a_struct_returned_by_value(windll: tuple[Any, int]) -> None:
    lib, _ = windll
    make = lib.make_sample
    make.argtypes = [bct.c_int, bct.c_double, bct.c_char]
    make.restype = Sample
    s = make(7, 2.5, b"x")
    assert isinstance(s, Sample)
    assert (s.id, s.value, s.tag) == (7, 2.5, b"x")
    assert bct.sizeof(Sample, target="win32") == 24


def test_use_last_error_captures_get_last_error(windll: tuple[Any, int]) -> None:
    _, bits = windll
    lib = bct.WinDLL(build_windll("windll", bits), use_last_error=True)
    fail_with = lib.fail_with
    fail_with.argtypes = [bct.c_uint32]
    bct.set_last_error(0)
    assert fail_with(42) == 0
    assert bct.get_last_error() == 42
    assert bitbridge.get_last_error() == 42
    assert fail_with(5) == 0
    assert bitbridge.set_last_error(0) == 5
    lib.server.shutdown()


def test_use_last_error_on_a_linux_library_is_refused_at_the_first_call() -> None:
    lib = bitbridge.CDLL("libc.so.6", arch="x86_64", use_last_error=True)
    with pytest.raises(bitbridge.SignatureError, match="only on Windows"):
        lib.abs(-1)
    lib.server.shutdown()


def test_a_winfunctype_callback(windll: tuple[Any, int]) -> None:
    lib, _ = windll
    proto = bct.WINFUNCTYPE(bct.c_int, bct.c_int)
    seen: list[int] = []

    def square(x: int) -> int:
        seen.append(x)
        return x * x

    cb = proto(square)
    apply_std = lib.apply_std
    apply_std.argtypes = [proto, bct.c_int]
    apply_std.restype = bct.c_int
    assert apply_std(cb, 3) == 9 + 16
    assert seen == [3, 4]


def test_utf16_strings_in(windll: tuple[Any, int]) -> None:
    lib, _ = windll
    wide_length = lib.wide_length
    wide_length.argtypes = [bct.c_wchar_p]
    wide_length.restype = bct.c_int
    assert wide_length("na\u00efve") == 5
    # Outside the BMP: two UTF-16 units, as wcslen counts them on Windows.
    assert wide_length("a\U0001f600") == 3


@pytest.mark.parametrize("bits", [32, 64], ids=["win32", "win64"])
def test_kernel32_get_local_time(bits: int) -> None:
    k32 = bct.windll.kernel32 if bits == 64 else bct.WinDLL("kernel32.dll", arch=ARCH[bits])
    assert k32.server.target == TARGET[bits]
    get_local_time = k32.GetLocalTime
    get_local_time.argtypes = [bct.POINTER(SYSTEMTIME)]
    get_local_time.restype = None
    t = SYSTEMTIME()
    get_local_time(bct.byref(t))
    assert 2024 <= t.wYear < 2100, t.wYear
    assert 1 <= t.wMonth <= 12 and t.wDayOfWeek <= 6 and 1 <= t.wDay <= 31
    assert t.wHour < 24 and t.wMinute < 60 and t.wSecond < 61 and t.wMilliseconds < 1000
