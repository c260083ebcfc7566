"""numpy arrays, array.array, bytearray and memoryview as pointer arguments: one copy each way (none back
for const), written back in place."""

from __future__ import annotations

import array
from typing import Any

import bitbridge
import numpy as np
import pytest
from bitbridge import ctypes as bct
from conftest import BRIDGED


def test_numpy_in_and_in_out(agree: Any) -> None:
    def case(b: Any) -> Any:
        ct, lib = b.ct, b.load("edge")
        if b.is_bitbridge:
            arg = np.arange(1, 6, dtype=np.int32)
            lib.inc_all.argtypes, lib.inc_all.restype = [ct.POINTER(ct.c_int), ct.c_int], None
            lib.inc_all(arg, 5)
        else:  # ctypes takes a numpy array through its ctypes attribute
            arg = np.arange(1, 6, dtype=np.int32)
            lib.inc_all.argtypes, lib.inc_all.restype = [ct.POINTER(ct.c_int), ct.c_int], None
            lib.inc_all(arg.ctypes.data_as(ct.POINTER(ct.c_int)), 5)
        return arg.tolist()

    assert agree(case) == [2, 3, 4, 5, 6]


@pytest.mark.parametrize("kind", ["numpy", "array", "bytearray", "memoryview", "list"])
def test_any_buffer_sums(kind: str) -> None:
    values = [1.5, 2.5, 3.0, 4.0]
    data: Any = {
        "numpy": np.array(values),
        "array": array.array("d", values),
        "bytearray": bytearray(np.array(values).tobytes()),
        "memoryview": memoryview(np.array(values)),
        "list": values,
    }[kind]
    for b in BRIDGED:
        f = b.load("ctest").function("double sum4(const double *f, int n)")
        assert f(data, 4) == 11.0


def test_const_buffer_is_not_written_back_and_read_only_is_fine() -> None:
    a = np.arange(4, dtype=np.float64)
    a.flags.writeable = False
    for b in BRIDGED:
        f = b.load("ctest").function("double sum4(const double *f, int n)")
        assert f(a, 4) == 6.0


def test_item_size_must_match_the_servers_element() -> None:
    f = BRIDGED[0].load("edge")["inc_all"]
    f.argtypes = [bct.POINTER(bct.c_long), bct.c_int]
    with pytest.raises(bitbridge.ArgumentError, match="8-byte items for `long \\*`"):
        f(np.zeros(3, dtype=np.int64), 3)


def test_non_contiguous_numpy_is_refused_clearly() -> None:
    f = BRIDGED[0].load("ctest").function("double sum4(const double *f, int n)")
    with pytest.raises(bitbridge.ArgumentError):
        f(np.arange(10.0)[::2], 5)


def test_one_million_values_in_and_back_in_place() -> None:
    d = np.arange(1_000_000, dtype=np.float64)
    for b in BRIDGED:
        lib = b.load("edge")
        s = b.load("ctest").function("double sum4(const double *f, int n)")
        assert s(d, len(d)) == float(d.sum())
        v = np.arange(1_000_000, dtype=np.int32)
        lib.inc_all.argtypes, lib.inc_all.restype = [bct.POINTER(bct.c_int), bct.c_int], None
        lib.inc_all(v, len(v))
        assert v[0] == 1 and v[-1] == 1_000_000 and int(v.sum()) == 500_000_500_000
