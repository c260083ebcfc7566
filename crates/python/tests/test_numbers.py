"""Lists and tuples of Python numbers for pointers to numbers and C array members: packed into one vector
of the element type the server has for the C type (`Value::Numbers`), sent as its bytes, and written
back from the packed result; the errors still name the argument and the element."""

from __future__ import annotations

from typing import Any

import bitbridge
import numpy as np
import pytest
from bitbridge import ctypes as bct
from conftest import BRIDGED


def fn(lib: Any, name: str, argtypes: list, restype: Any = None) -> Any:
    f = lib[name]
    f.argtypes, f.restype = argtypes, restype
    return f


@pytest.mark.parametrize("seq", [list, tuple])
def test_lists_of_floats_and_ints_into_pointers(bridged: Any, seq: Any) -> None:
    ct, edge = bridged.load("ctest"), bridged.load("edge")
    total = fn(ct, "sum", [bct.POINTER(bct.c_double), bct.c_int], bct.c_double)
    # ints, bools, numpy scalars and ctypes scalars are numbers too, as ctypes takes them for `double`
    items = [1.5, 2, True, np.float64(0.25), np.int32(3), bct.c_double(0.5)]
    assert total(seq(items), len(items)) == 8.25
    assert total(seq([]), 0) == 0.0
    longs = fn(edge, "long_sum", [bct.POINTER(bct.c_long), bct.c_int], bct.c_long)
    assert longs(seq([1, -2, 3, np.int64(5)]), 4) == 7


def test_one_million_floats_from_a_list(bridged: Any) -> None:
    values = [float(i) for i in range(1_000_000)]
    s = bridged.load("ctest").function("double sum4(const double *f, int n)")
    assert s(values, len(values)) == 499999500000.0


def test_in_out_lists_get_the_results(bridged: Any) -> None:
    edge, ct = bridged.load("edge"), bridged.load("ctest")
    v = [1, 2, 3]
    fn(edge, "inc_all", [bct.POINTER(bct.c_int), bct.c_int])(v, 3)
    assert v == [2, 3, 4]
    f = [1.0, 2.5, 4]
    fn(ct, "scale", [bct.POINTER(bct.c_double), bct.c_int, bct.c_double])(f, 3, 2.0)
    assert f == [2.0, 5.0, 8.0] and all(type(x) is float for x in f)
    h = [1, 3.0, -5]
    fn(edge, "float_half", [bct.POINTER(bct.c_float), bct.c_int])(h, 3)
    assert h == [0.5, 1.5, -2.5]
    u = [1, 65535, 7]
    fn(edge, "ushort_inc", [bct.POINTER(bct.c_ushort), bct.c_int])(u, 3)
    assert u == [2, 0, 8]  # C's unsigned wrap-around
    w = [2**61, -3]
    fn(edge, "i64_twice", [bct.POINTER(bct.c_int64), bct.c_int])(w, 2)
    assert w == [2**62, -6]
    n = [5, -7, 2**31 - 1]
    fn(edge, "long_neg", [bct.POINTER(bct.c_long), bct.c_int])(n, 3)
    assert n == [-5, 7, -(2**31 - 1)]


def test_ctypes_objects_in_a_list_are_written_into_and_unchanged_numbers_kept() -> None:
    for b in BRIDGED:
        c = bct.c_int(10)
        v = [c, 20, 30]
        fn(b.load("edge"), "inc_all", [bct.POINTER(bct.c_int), bct.c_int])(v, 3)
        assert v[0] is c and c.value == 11 and v[1:] == [21, 31]
        # a pointer without const is in-out: what the function did not change stays the same object
        f = [0.1, 0.2, 0.3]
        before = list(f)
        fn(b.load("ctest"), "sum", [bct.POINTER(bct.c_double), bct.c_int], bct.c_double)(f, 3)
        assert all(x is y for x, y in zip(f, before, strict=True))


def test_long_is_the_servers_long(bridged: Any) -> None:
    edge = bridged.load("edge")
    longs = fn(edge, "long_sum", [bct.POINTER(bct.c_long), bct.c_int], bct.c_long)
    neg = fn(edge, "long_neg", [bct.POINTER(bct.c_long), bct.c_int])
    big = [1, 2**40]
    if bridged.bits == 32:
        with pytest.raises(
            bitbridge.ArgumentError, match=r"argument 1 -> \[1\]: 1099511627776 does not fit in `long`"
        ):
            longs(big, 2)
        with pytest.raises(
            bitbridge.ArgumentError, match=r"argument 1 -> \[1\]: 1099511627776 does not fit in `long`"
        ):
            longs((bct.c_long * 2)(*big), 2)
    else:
        assert longs(big, 2) == 2**40 + 1
        assert longs((bct.c_long * 2)(*big), 2) == 2**40 + 1
    # a ctypes array of c_long (8 bytes here, 4 on i386) goes converted and comes back converted
    a = (bct.c_long * 3)(5, -7, 2**31 - 1)
    neg(a, 3)
    assert list(a) == [-5, 7, -(2**31 - 1)]
    u = (bct.c_ulong * 2)(3, 2**32 - 1)
    assert fn(edge, "long_sum", [bct.POINTER(bct.c_ulong), bct.c_int], bct.c_ulong)(u, 1) == 3


def test_out_of_range_and_wrong_type_elements_name_argument_and_index() -> None:
    for b in BRIDGED:
        edge, ct = b.load("edge"), b.load("ctest")
        inc = fn(edge, "inc_all", [bct.POINTER(bct.c_int), bct.c_int])
        with pytest.raises(
            bitbridge.ArgumentError, match=r"argument 1 -> \[2\]: 2147483648 does not fit in `int`"
        ):
            inc([1, 2, 2**31], 3)
        with pytest.raises(
            bitbridge.ArgumentError, match=r"argument 1 -> \[0\]: -1 does not fit in `unsigned short`"
        ):
            fn(edge, "ushort_inc", [bct.POINTER(bct.c_ushort), bct.c_int])((-1,), 1)
        with pytest.raises(
            bitbridge.ArgumentError, match=r"argument 1: \[1\]: expected an integer for `int`, got float"
        ):
            inc([1, 2.5], 2)
        total = fn(ct, "sum", [bct.POINTER(bct.c_double), bct.c_int], bct.c_double)
        with pytest.raises(
            bitbridge.ArgumentError, match=r"argument 1: \[2\]: expected a number for `double`, got str"
        ):
            total([1.0, 2.0, "3"], 3)
        with pytest.raises(
            bitbridge.ArgumentError, match=r"argument 1: \[0\]: expected a number for `double`, got NoneType"
        ):
            total((None,), 1)
        assert total([1.0, 2.0], 2) == 3.0  # nothing lost


class Tagged(bct.Structure):
    _fields_ = [
        ("tag", bct.c_char),
        ("value", bct.c_double),
        ("id", bct.c_ubyte * 16),
        ("samples", bct.c_short * 3),
    ]


def test_struct_with_array_members_from_lists(bridged: Any) -> None:
    f = fn(bridged.load("edge"), "tagged_scale", [Tagged, bct.c_double], Tagged)
    r = f((b"a", 1.5, list(range(16)), [1, -2, 3]), 2.0)
    assert (r.tag, r.value, list(r.id), list(r.samples)) == (
        b"b",
        3.0,
        [255 - i for i in range(16)],
        [2, -4, 6],
    )
    with pytest.raises(
        bitbridge.ArgumentError, match=r"argument 1 -> \.samples -> \[1\]: 40000 does not fit in `short`"
    ):
        f((b"a", 1.5, [], [1, 40000, 3]), 2.0)
    with pytest.raises(
        bitbridge.ArgumentError,
        match=r"argument 1: \.samples: \[1\]: expected an integer for `short`, got str",
    ):
        f((b"a", 1.5, [], [1, "x"]), 2.0)
    with pytest.raises(
        bitbridge.ArgumentError, match=r"argument 1 -> \.samples: 4 elements do not fit in `short\[3\]`"
    ):
        f((b"a", 1.5, [], [1, 2, 3, 4]), 2.0)


def test_pointer_member_given_a_list_comes_back_as_a_list(bridged: Any) -> None:
    class Buf(bct.Structure):
        _fields_ = [("n", bct.c_int), ("data", bct.POINTER(bct.c_int))]

    edge = bridged.load("edge")
    assert fn(edge, "buf_sum", [bct.POINTER(Buf)], bct.c_int)([(4, [1, 2, 3, 4])]) == 10
    bufs = [(4, [0, 0, 0, 0])]
    fn(edge, "buf_squares", [bct.POINTER(Buf)])(bufs)
    assert bufs == [(4, [0, 1, 4, 9])]
