"""C declarations: a prototype or a header's text gives the signature, with directions from const."""

from __future__ import annotations

from typing import Any

import numpy as np
from conftest import BRIDGED, FIXTURES


def test_prototype_and_header_declarations() -> None:
    for b in BRIDGED:
        lib = b.load("ctest")
        f = lib.function("double sum(const double *f, int n)")
        assert f([1.0, 2.0, 3.0], 3) == 6.0
        h = lib.declare(str(FIXTURES / "ctest.h"))
        Complex = h.types["struct Complex"]
        z = h.add(Complex(1, 2), Complex(3, 4))
        assert (z.re, z.im) == (4.0, 6.0)
        assert "add" in h.functions


def test_header_text_with_constants_and_packed_struct() -> None:
    text = """
    #define N_POINTS 4
    #pragma pack(push, 1)
    struct Packed { char c; int i; short s; };
    #pragma pack(pop)
    int packed_sum_ptr(const struct Packed *p);
    """
    for b in BRIDGED:
        h = b.load("edge").declare(text)
        assert h.constants["N_POINTS"] == 4
        P = h.types["struct Packed"]
        assert h.packed_sum_ptr(P(b"\x01", 2, 3)) == 6


def test_declared_out_buffers_come_back(agree: Any) -> None:
    for b in BRIDGED:
        f = b.load("edge").function("void inc_all(int *v, int n)")
        v = np.array([1, 2, 3], dtype=np.int32)
        f(v, 3)
        assert v.tolist() == [2, 3, 4]
