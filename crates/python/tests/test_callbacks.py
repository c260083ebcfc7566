"""CFUNCTYPE callbacks: the 32-bit libc's qsort with a Python comparator, callbacks taking structs and
pointers, nesting, and an exception in a callback."""

from __future__ import annotations

from typing import Any

import bitbridge
import pytest
from conftest import BRIDGED


def test_qsort_with_a_python_comparator(agree: Any) -> None:
    def case(b: Any) -> Any:
        ct, libc = b.ct, b.libc()
        CMP = ct.CFUNCTYPE(ct.c_int, ct.POINTER(ct.c_int), ct.POINTER(ct.c_int))
        calls = []

        def compare(a: Any, c: Any) -> int:
            calls.append(1)
            return a[0] - c[0]

        values = (ct.c_int * 8)(5, 1, 7, 33, 99, -4, 0, 12)
        size_t = ct.c_size_t
        libc.qsort.argtypes = [ct.c_void_p, size_t, size_t, CMP]
        libc.qsort.restype = None
        libc.qsort(values, len(values), ct.sizeof(ct.c_int), CMP(compare))
        return list(values), len(calls) > 0

    assert agree(case) == ([-4, 0, 1, 5, 7, 12, 33, 99], True)


def test_callbacks_with_structs_and_out_pointers(agree: Any) -> None:
    def case(b: Any) -> Any:
        ct, lib = b.ct, b.load("events")

        class Pt(ct.Structure):
            _fields_ = [("x", ct.c_double), ("y", ct.c_double)]

        F = ct.CFUNCTYPE(ct.c_double, Pt, ct.POINTER(ct.c_double), ct.c_int)
        lib.apply_pt.restype, lib.apply_pt.argtypes = ct.c_double, [F, Pt]
        seen = []

        def f(p: Any, w: Any, n: int) -> float:
            seen.append((p.x, p.y, n, [w[i] for i in range(1)]))
            return p.x * 10 + p.y

        r = lib.apply_pt(F(f), Pt(1.5, 2))
        FILL = ct.CFUNCTYPE(None, ct.POINTER(ct.c_int), ct.c_int)

        def fill(out: Any, i: int) -> None:
            out[0] = i * i

        dst = (ct.c_int * 4)()
        lib.fill_with.argtypes, lib.fill_with.restype = [FILL, ct.POINTER(ct.c_int), ct.c_int], None
        lib.fill_with(FILL(fill), dst, 4)
        return r, seen[0][:3], list(dst)

    assert agree(case)[2] == [0, 1, 4, 9]


def test_nested_callbacks_call_back_into_the_library(agree: Any) -> None:
    def case(b: Any) -> Any:
        ct, lib = b.ct, b.load("events")
        CB = ct.CFUNCTYPE(ct.c_int, ct.c_int)
        lib.nest.restype, lib.nest.argtypes = ct.c_int, [CB, ct.c_int]
        cb_holder: list = []

        def cb(depth: int) -> int:
            return lib.nest(cb_holder[0], depth - 1) if depth > 0 else 100

        cb_holder.append(CB(cb))
        lib.maybe_call.restype, lib.maybe_call.argtypes = ct.c_int, [CB, ct.c_int]
        return lib.nest(cb_holder[0], 3), lib.maybe_call(CB(), 5), lib.maybe_call(CB(lambda x: x * 3), 5)

    assert agree(case) == (104, -1, 15)


def test_an_exception_in_a_callback_fails_the_call_with_its_traceback() -> None:
    for b in BRIDGED:
        ct, lib = b.ct, b.load("events")
        CB = ct.CFUNCTYPE(ct.c_int, ct.c_int)
        lib.maybe_call.restype, lib.maybe_call.argtypes = ct.c_int, [CB, ct.c_int]

        def bad(x: int) -> int:
            raise ValueError(f"no thanks {x}")

        with pytest.raises(bitbridge.CallbackError, match="ValueError: no thanks 5"):
            lib.maybe_call(CB(bad), 5)
        assert lib.maybe_call(CB(lambda x: x + 1), 1) == 2  # the server is still fine


def test_callbacks_from_eight_threads_at_once() -> None:
    # A native object dropped with the GIL held used to wait for the server while another thread's
    # callback waited for the GIL: the interpreter hung.
    import threading

    for b in BRIDGED:
        ct = b.ct
        lib = b.load("events", fresh=True, call_timeout=60)
        CB = ct.CFUNCTYPE(ct.c_int, ct.c_int)
        lib.maybe_call.restype, lib.maybe_call.argtypes = ct.c_int, [CB, ct.c_int]
        errors: list = []

        def work(k: int, CB: Any = CB, lib: Any = lib, errors: list = errors) -> None:  # noqa: N803
            cb = CB(lambda x: x + k)
            for i in range(300):
                r = lib.maybe_call(cb, i)
                if r != i + k:
                    errors.append((k, i, r))

        threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads) and not errors
        lib.server.shutdown()
