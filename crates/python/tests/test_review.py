"""Cases a hostile review found: each was a crash, a silent wrong result or a difference from ctypes."""

from __future__ import annotations

import ctypes
from typing import Any

import bitbridge
import numpy as np
import pytest
from bitbridge import ctypes as bct
from bitbridge import sharedctypes as sc
from conftest import BRIDGED


def test_a_void_pointer_result_cast_and_read_in_the_server() -> None:
    for b in BRIDGED:
        lib = b.load("edge")
        lib.greet.restype = bct.c_void_p
        addr = lib.greet()
        assert isinstance(addr, bitbridge.ServerAddress) and isinstance(addr, int)
        # ctypes.cast(addr, POINTER(c_char)) would read this process's memory at the server's address.
        p = bct.cast(addr, bct.POINTER(bct.c_char))
        assert isinstance(p, bitbridge.RemotePointer) and b"".join(p[i] for i in range(5)) == b"hello"
        assert bct.string_at(addr) == b"hello from C" and bct.string_at(addr, 5) == b"hello"
        assert bct.cast(addr, bct.c_char_p) == b"hello from C"
        lib.counter_new.restype, lib.counter_new.argtypes = bct.c_void_p, [bct.c_int, bct.c_int]

        class Counter(bct.Structure):
            _fields_ = [("value", bct.c_int), ("step", bct.c_int)]

        h = lib.counter_new(3, 4)
        assert (bct.cast(h, bct.POINTER(Counter)).contents.step, int(bct.cast(h, bct.c_void_p))) == (
            4,
            int(h),
        )


def test_numpy_data_as_sends_the_whole_array_and_bare_addresses_are_refused() -> None:
    for b in BRIDGED:
        lib = b.load("ctest")
        lib.sum.restype, lib.sum.argtypes = bct.c_double, [bct.POINTER(bct.c_double), bct.c_int]
        a = np.arange(1.0, 6.0)
        assert lib.sum(a.ctypes.data_as(bct.POINTER(bct.c_double)), 5) == 15.0
        x = (bct.c_double * 6)(*range(6))
        with pytest.raises(bitbridge.ArgumentError, match="made from an address"):
            lib.sum(ctypes.cast(ctypes.byref(x, 8), ctypes.POINTER(ctypes.c_double)), 3)
        with pytest.raises(bitbridge.ArgumentError, match="offset"):
            lib.sum(ctypes.byref(x, 16), 2)
        assert lib.sum(ctypes.byref(x), 6) == 15.0


def test_ndpointer_arguments_are_written_back() -> None:
    from numpy.ctypeslib import ndpointer

    for b in BRIDGED:
        lib = b.load("edge")
        lib.inc_all.argtypes, lib.inc_all.restype = [ndpointer(np.int32), bct.c_int], None
        v = np.array([1, 2, 3], dtype=np.int32)
        lib.inc_all(v, 3)
        assert v.tolist() == [2, 3, 4]


def test_members_of_a_synchronized_struct_are_written_through() -> None:
    class Point(bct.Structure):
        _fields_ = [("x", bct.c_double), ("y", bct.c_double)]

    v = sc.Value(Point, 1.0, 2.0, target="i686")
    v.x = 5.0
    assert v.get_obj().x == 5.0 and v.x == 5.0


def test_argtypes_reads_back_as_given(agree: Any) -> None:
    def case(b: Any) -> Any:
        f = b.load("edge")["id_int"]
        given = [b.ct.c_int]
        f.argtypes = given
        return f.argtypes is given, f.argtypes == given

    assert agree(case) == (True, True)


def test_errcheck_with_outputs_and_arguments_given_twice(agree: Any) -> None:
    def case(b: Any) -> Any:
        ct, lib = b.ct, b.load("edge")
        proto = ct.CFUNCTYPE(None, ct.POINTER(ct.c_int), ct.POINTER(ct.c_double))
        f = proto(("get_two", lib), ((2, "a"), (2, "b")))
        f.errcheck = lambda r, fn, args: "checked"
        g = proto(("get_two", lib), ((2, "a"), (2, "b")))
        g.errcheck = lambda r, fn, args: args
        h = ct.CFUNCTYPE(ct.c_int, ct.c_int)(("id_int", lib), ((1, "x"),))
        try:
            h(1, x=2)
            twice = "accepted"
        except TypeError:
            twice = "TypeError"
        return f(), g(), twice

    assert agree(case) == ("checked", (7, 2.5), "TypeError")


def test_truthy_bools_and_float_like_numbers_as_ctypes_takes_them(agree: Any) -> None:
    def case(b: Any) -> Any:
        lib = b.load("edge")
        f = lib["id_bool"]
        f.argtypes, f.restype = [b.ct.c_bool], b.ct.c_bool
        g = lib["id_double"]
        g.argtypes, g.restype = [b.ct.c_double], b.ct.c_double
        return f(2), f([]), f("x"), g(True), g(np.float32(1.5)), g(3)

    assert agree(case) == (True, False, True, 1.0, 1.5, 3.0)


def test_a_struct_with_pointer_members_returned_by_value_is_a_clear_error() -> None:
    class Buf(bct.Structure):
        _fields_ = [("n", bct.c_int), ("data", bct.POINTER(bct.c_int))]

    f = BRIDGED[0].load("edge")["id_int"]
    f.restype, f.argtypes = Buf, [bct.c_int]
    with pytest.raises(bitbridge.SignatureError, match="return it through a pointer"):
        f(1)


def test_pointers_to_pointers_keep_their_level(agree: Any) -> None:
    def case(b: Any) -> Any:
        ct, lib = b.ct, b.load("edge", fresh=True)
        lib.get_ptr.argtypes = [ct.POINTER(ct.POINTER(ct.c_int))]
        p = ct.POINTER(ct.c_int)()
        lib.get_ptr(ct.byref(p))
        lib.deref2.argtypes, lib.deref2.restype = [ct.POINTER(ct.POINTER(ct.c_int))], ct.c_int
        x = ct.c_int(41)
        r = lib.deref2(ct.byref(ct.pointer(x)))
        lib.make_string.argtypes = [ct.POINTER(ct.c_char_p)]
        s = ct.c_char_p()
        lib.make_string(ct.byref(s))
        return p[0], r, x.value, s.value

    assert agree(case) == (10, 42, 42, b"made in C")


def test_a_void_pointer_filled_by_the_library_passes_back() -> None:
    for b in BRIDGED:
        lib = b.load("edge", fresh=True)
        lib.get_ptr.argtypes = [bct.POINTER(bct.c_void_p)]
        v = bct.c_void_p()
        lib.get_ptr(bct.byref(v))
        assert v.value
        lib.is_null.argtypes, lib.is_null.restype = [bct.c_void_p], bct.c_int
        assert lib.is_null(v) == 0 and lib.is_null(None) == 1
