"""The ctypes tutorial's examples (libm, a struct by value, byref, arrays, strings, char[][20], a 2-D
matrix), each through bitbridge's i686 and x86_64 servers and through in-process ctypes."""

from __future__ import annotations

from typing import Any


def test_libm_cos_and_pow_with_restype_and_argtypes(agree: Any) -> None:
    def case(b: Any) -> Any:
        ct, libm = b.ct, b.libm()
        libm.cos.restype = ct.c_double
        libm.cos.argtypes = [ct.c_double]
        libm.pow.restype = ct.c_double
        libm.pow.argtypes = [ct.c_double, ct.c_double]
        return libm.cos(0.5), libm.pow(2.0, 10.0), libm.pow(2, 0.5)

    assert agree(case)[1] == 1024.0


def complex_type(ct: Any) -> Any:
    class Complex(ct.Structure):
        _fields_ = [("re", ct.c_double), ("im", ct.c_double)]

    return Complex


def test_struct_by_value_both_ways(agree: Any) -> None:
    def case(b: Any) -> Any:
        ct, lib = b.ct, b.load("ctest")
        Complex = complex_type(ct)
        lib.add.restype = Complex
        lib.add.argtypes = [Complex, Complex]
        z = lib.add(Complex(1, 2), Complex(3.5, -4))
        return type(z).__name__, z.re, z.im

    assert agree(case) == ("Complex", 4.5, -2.0)


def test_byref_swap_writes_back_into_the_callers_objects(agree: Any) -> None:
    def case(b: Any) -> Any:
        ct, lib = b.ct, b.load("ctest")
        Complex = complex_type(ct)
        lib.swap.argtypes = [ct.POINTER(Complex), ct.POINTER(Complex)]
        lib.swap.restype = None
        a, c = Complex(1, 2), Complex(3, 4)
        r = lib.swap(ct.byref(a), ct.byref(c))
        p, q = Complex(5, 6), Complex(7, 8)
        lib.swap(ct.pointer(p), q)  # a pointer object, and a Structure where a pointer is declared
        return r, (a.re, a.im, c.re, c.im), (p.re, q.re)

    assert agree(case) == (None, (3.0, 4.0, 1.0, 2.0), (7.0, 5.0))


def test_arrays_summed(agree: Any) -> None:
    def case(b: Any) -> Any:
        ct, lib = b.ct, b.load("ctest")
        lib.sum.restype = ct.c_double
        lib.sum.argtypes = [ct.POINTER(ct.c_double), ct.c_int]
        values = (ct.c_double * 5)(1.5, 2.5, 3, 4, 5)
        return lib.sum(values, 5), lib.sum(values, 2)

    assert agree(case) == (16.0, 4.0)


def test_string_modified_in_place(agree: Any) -> None:
    def case(b: Any) -> Any:
        ct, lib = b.ct, b.load("ctest")
        lib.titlecase.argtypes = [ct.c_char_p]
        lib.titlecase.restype = None
        buf = ct.create_string_buffer(b"the quick brown fox")
        lib.titlecase.argtypes = [ct.POINTER(ct.c_char)]
        lib.titlecase(buf)
        return buf.value, buf.raw[-2:]

    assert agree(case)[0] == b"The Quick Brown Fox"


def test_tokenize_into_char_array_of_arrays(agree: Any) -> None:
    def case(b: Any) -> Any:
        ct, lib = b.ct, b.load("ctest")
        Words = (ct.c_char * 20) * 10
        lib.tokenize.argtypes = [ct.c_char, ct.c_char_p, ct.POINTER(ct.c_char * 20)]
        lib.tokenize.restype = ct.c_int
        words = Words()
        n = lib.tokenize(b" ", b"one two three four", words)
        return n, [words[i].value for i in range(n)]

    assert agree(case) == (4, [b"one", b"two", b"three", b"four"])


def test_matrix_multiply_two_dimensional(agree: Any) -> None:
    def case(b: Any) -> Any:
        ct, lib = b.ct, b.load("ctest")
        Row = ct.c_double * 100
        lib.mult.argtypes = [ct.POINTER(Row)] * 3 + [ct.c_int] * 3
        lib.mult.restype = None
        a, bb, c = (Row * 2)(), (Row * 3)(), (Row * 2)()
        for i in range(2):
            for j in range(3):
                a[i][j] = i + j + 1
        for i in range(3):
            for j in range(2):
                bb[i][j] = i * 2 + j
        lib.mult(a, bb, c, 2, 3, 2)
        return [[c[i][j] for j in range(2)] for i in range(2)]

    assert agree(case) == [[16.0, 22.0], [22.0, 31.0]]
