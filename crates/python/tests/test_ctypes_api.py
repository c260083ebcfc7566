"""The rest of the ctypes surface: errcheck, a callable restype, _anonymous_, cdll/LoadLibrary, keyword
arguments through paramflags, default conversions without argtypes, sizeof on a target."""

from __future__ import annotations

from typing import Any

import pytest
from bitbridge import ctypes as bct
from conftest import BRIDGED, build


def test_errcheck_and_a_callable_restype(agree: Any) -> None:
    def case(b: Any) -> Any:
        ct, lib = b.ct, b.load("edge")
        f = lib["id_int"]
        f.argtypes, f.restype = [ct.c_int], ct.c_int
        seen = []

        def check(result: int, func: Any, args: tuple) -> int:
            seen.append((result, args))
            return result * 10

        f.errcheck = check
        g = lib["id_uint"]
        g.argtypes, g.restype = [ct.c_uint], hex
        return f(4), seen, g(255)

    assert agree(case) == (40, [(4, (4,))], "0xff")


def test_anonymous_members(agree: Any) -> None:
    def case(b: Any) -> Any:
        ct, lib = b.ct, b.load("edge")

        class FD(ct.Union):
            _fields_ = [("f", ct.c_float), ("d", ct.c_double)]

        class WithUnion(ct.Structure):
            _anonymous_ = ("v",)
            _fields_ = [("tag", ct.c_char), ("v", FD), ("s", ct.c_short)]

        lib.wu_sum.restype, lib.wu_sum.argtypes = ct.c_double, [WithUnion]
        w = WithUnion()
        w.tag, w.d, w.s = b"\x01", 0.25, 2
        return lib.wu_sum(w), w.d

    assert agree(case) == (3.25, 0.25)


def test_default_conversions_without_argtypes(agree: Any) -> None:
    def case(b: Any) -> Any:
        ct, lib = b.ct, b.load("edge")
        f = lib["str_len"]
        f.restype = ct.c_int
        g = lib["id_double"]
        g.argtypes, g.restype = None, ct.c_double
        return f(b"hello"), f(None), g(ct.c_double(2.5))

    assert agree(case) == (5, -1, 2.5)


def test_paramflags_names_defaults_and_keywords(agree: Any) -> None:
    def case(b: Any) -> Any:
        ct, lib = b.ct, b.load("edge")
        proto = ct.CFUNCTYPE(ct.c_int, ct.c_int)
        f = proto(("id_int", lib), ((1, "x", 7),))
        return f(), f(3), f(x=5)

    assert agree(case) == (7, 3, 5)


def test_cdll_loader_and_load_library() -> None:
    path = build("edge", 32)
    lib = bct.cdll.LoadLibrary(path, call_timeout=5)
    lib.id_int.argtypes, lib.id_int.restype = [bct.c_int], bct.c_int
    assert lib.id_int(9) == 9
    assert bct.LoadLibrary(path).server.target == "i686"


def test_sizeof_and_alignment_on_a_target() -> None:
    class S(bct.Structure):
        _fields_ = [("c", bct.c_char), ("d", bct.c_double)]

    assert (bct.sizeof(S), bct.sizeof(S, target="i686"), bct.alignment(S, target="i686")) == (16, 12, 4)
    assert bct.sizeof(S(), target="x86_64") == 16
    assert bct.sizeof(bct.c_long, target="win64") == 4


def test_restype_pointer_to_struct_reads_in_the_server() -> None:
    lib = BRIDGED[0].load("edge")
    lib.counter_new.restype = bct.c_void_p
    lib.counter_new.argtypes = [bct.c_int, bct.c_int]

    class Counter(bct.Structure):
        _fields_ = [("value", bct.c_int), ("step", bct.c_int)]

    h = lib.counter_new(10, 3)
    p = bct.cast(bitbridge_pointer(lib, h), bct.POINTER(Counter))
    assert (p.contents.value, p.contents.step) == (10, 3)
    p[0] = Counter(20, 3)
    lib.counter_next.argtypes, lib.counter_next.restype = [bct.c_void_p], bct.c_int
    assert lib.counter_next(h) == 20

    class Mixed(bct.Structure):  # 16 bytes here, 12 on i386: written member by member, not as bytes
        _fields_ = [("d", bct.c_double), ("c", bct.c_char)]

    q = bct.cast(bitbridge_pointer(lib, h), bct.POINTER(Mixed))
    with pytest.raises(TypeError, match="write the members"):
        q[0] = Mixed(1.0, b"x")


def bitbridge_pointer(lib: Any, address: int) -> Any:
    import bitbridge

    return bitbridge.RemotePointer(lib.server, address, None)


@pytest.mark.parametrize("wait", ["spin", "adaptive", "sleep"])
def test_every_wait_mode_gives_the_same_answers(wait: str) -> None:
    lib = bct.CDLL(build("edge", 32), wait=wait)
    lib.id_int.argtypes, lib.id_int.restype = [bct.c_int], bct.c_int
    assert [lib.id_int(i) for i in range(200)] == list(range(200))
    lib.server.shutdown()


def test_an_unknown_wait_mode_is_named() -> None:
    with pytest.raises(ValueError, match="wait must be 'adaptive', 'spin' or 'sleep', not \"busy\""):
        bct.CDLL(build("edge", 32), wait="busy")
