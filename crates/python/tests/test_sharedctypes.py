"""bitbridge.sharedctypes: Python's sharedctypes example (a Value, an Array, a string Array, a shared
struct array updated by a child of the other bitness under the lock), buffers, zero-copy arguments."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import bitbridge
import numpy as np
import pytest
from bitbridge import ctypes as bct
from bitbridge import sharedctypes as sc
from conftest import BRIDGED, ROOT


def shared_child(bits: int) -> str:
    p = ROOT / "target" / ("i686-unknown-linux-gnu/debug" if bits == 32 else "debug") / "shared_child"
    assert p.exists(), f"{p} is built by ./x servers"
    return str(p)


class Point(bct.Structure):
    _fields_ = [("x", bct.c_double), ("y", bct.c_double)]


class Mixed(bct.Structure):
    _fields_ = [("c", bct.c_char), ("d", bct.c_double)]


@pytest.mark.parametrize("target,bits", [("i686", 32), ("x86_64", 64)])
def test_the_sharedctypes_example_with_a_child_of_either_bitness(target: str, bits: int) -> None:
    prefix = f"pytest-{os.getpid()}-{bits}"
    n = sc.Value("i", 7, target=target, name=f"{prefix}-n")
    x = sc.Value(bct.c_double, 1.0 / 3.0, lock=False, target=target, name=f"{prefix}-x")
    pts = sc.Array(Point, [(1.875, -6.25), (-5.75, 2.0), (2.375, 9.5)], target=target, name=f"{prefix}-pts")
    mixed = sc.Value(Mixed, b"z", 1.5, target=target, name=f"{prefix}-mixed")
    # The string: one char[32] (the child reads it as a whole), and the example's Array of chars.
    s = sc.Value(bct.c_char * 32, target=target, name=f"{prefix}-s")
    s.value = b"hello world"
    chars = sc.Array("c", b"hello world", target=target)
    assert (chars.value, len(chars), chars[:5]) == (b"hello world", 11, b"hello")
    other = 32 if bits == 64 else 64
    out = subprocess.run([shared_child(other), "square", prefix], capture_output=True, text=True, check=True)
    assert f"squared by a {other}-bit process" in out.stdout
    assert n.value == 49
    assert x.value == pytest.approx(1 / 9)
    assert s.value == b"HELLO WORLD"
    assert [(p.x, p.y) for p in pts] == [(3.515625, 39.0625), (33.0625, 4.0), (5.640625, 90.25)]
    assert (mixed.c, mixed.d) == (b"z", 2.25)
    assert bct.sizeof(Mixed, target=target) == (12 if bits == 32 else 16)


def test_a_counter_updated_under_the_lock_by_two_children_of_both_bitnesses() -> None:
    name = f"pytest-count-{os.getpid()}"
    counter = sc.Value(bct.c_longlong, 0, target="i686", name=name)
    procs = [subprocess.Popen([shared_child(b), "count", name, "2000"]) for b in (32, 64)]
    for _ in range(2000):
        with counter.get_lock():
            counter.value += 1
    assert [p.wait() for p in procs] == [0, 0]
    assert counter.value == 6000


def test_buffers_numpy_and_from_buffer_see_the_shared_memory() -> None:
    arr = sc.RawArray("d", 8)
    view = np.frombuffer(arr, dtype=np.float64)
    view[:] = np.arange(8)
    assert list(arr) == [float(i) for i in range(8)]
    arr[3] = 42.0
    assert view[3] == 42.0
    import ctypes

    c = (ctypes.c_double * 8).from_buffer(arr)
    assert c[3] == 42.0
    assert memoryview(arr).nbytes == 64


def test_shared_array_is_a_zero_copy_argument_and_the_library_may_keep_it() -> None:
    for b in BRIDGED:
        target = "i686" if b.bits == 32 else "x86_64"
        lib = b.load("edge")
        ints = sc.Array("i", [1, 2, 3], target=target)
        lib.keep.argtypes, lib.keep.restype = [bct.POINTER(bct.c_int), bct.c_int], None
        lib.kept_sum.restype = bct.c_int
        lib.fill_kept.argtypes, lib.fill_kept.restype = [bct.c_int], None
        lib.keep(ints, 3)
        assert lib.kept_sum() == 6
        ints[0] = 100  # seen by the library with nothing sent
        assert lib.kept_sum() == 105
        lib.fill_kept(9)  # the library writes through the pointer it kept
        assert list(ints.get_obj()) == [9, 9, 9]
        lib.keep(None, 0)


def test_copy_synchronized_open_and_locks() -> None:
    name = f"pytest-open-{os.getpid()}"
    a = sc.RawArray(bct.c_long, [1, -2, 3], target="i686", name=name)
    assert bct.sizeof(type(a)) == 12  # laid out for i686: long is 4 bytes
    b = sc.open(name)
    b[1] = -20
    assert a[1] == -20
    c = sc.copy(a)
    c[0] = 99
    assert a[0] == 1 and c[0] == 99
    s = sc.synchronized(a)
    lock = s.get_lock()
    assert lock.acquire() and lock.acquire()  # recursive
    lock.release()
    lock.release()
    with pytest.raises(bitbridge.UnsupportedError, match="not held"):
        lock.release()
    assert lock.acquire(timeout=0.01)
    lock.release()


def test_errors_name_the_object() -> None:
    with pytest.raises(bitbridge.Error):
        sc.open(f"pytest-missing-{os.getpid()}")
    with pytest.raises(ValueError, match="unknown typecode"):
        sc.RawValue("z")
    with pytest.raises(bitbridge.SignatureError, match="is not a ctypes type"):
        sc.RawValue(object)  # type: ignore[arg-type]
    Path("/dev/null")
