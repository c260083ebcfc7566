"""Unions, packed structs, nested arrays, pointers inside structs, out parameters, handles."""

from __future__ import annotations

import ctypes
from typing import Any

import bitbridge
import pytest
from bitbridge import ctypes as bct
from conftest import BRIDGED


def unions(ct: Any) -> tuple[Any, Any]:
    class U(ct.Union):
        _fields_ = [("i", ct.c_int), ("f", ct.c_float), ("d", ct.c_double), ("c", ct.c_char * 12)]

    class FD(ct.Union):
        _fields_ = [("f", ct.c_float), ("d", ct.c_double)]

    return U, FD


def test_unions_by_value_both_ways() -> None:
    # In-process ctypes passes and returns this union by value wrongly on x86_64 (it reads back
    # b"hello un" and passes 0.0): bitbridge's answers are C's, on both servers.
    for b in BRIDGED:
        ct, lib = b.ct, b.load("edge")
        U, FD = unions(ct)
        lib.u_make.restype, lib.u_make.argtypes = U, [ct.c_int]
        lib.u_read.restype, lib.u_read.argtypes = ct.c_double, [U, ct.c_int]
        lib.fd_make.restype, lib.fd_make.argtypes = FD, [ct.c_double]
        lib.fd_twice.restype, lib.fd_twice.argtypes = ct.c_double, [FD]
        u0, u1, u2 = lib.u_make(0), lib.u_make(1), lib.u_make(2)
        mine = U()
        mine.d = 7.25
        mine2 = U()
        mine2.c = b"abc"
        got = (
            u0.i,
            u1.d,
            u2.c,
            lib.u_read(mine, 1),
            lib.u_read(mine2, 2),
            lib.fd_make(1.5).d,
            lib.fd_twice(lib.fd_make(-3.0)),
        )
        assert got == (-42, 2.5, b"hello union", 7.25, 3.0, 1.5, -6.0), b


def test_union_inside_a_struct(agree: Any) -> None:
    def case(b: Any) -> Any:
        ct, lib = b.ct, b.load("edge")

        class FD(ct.Union):
            _fields_ = [("f", ct.c_float), ("d", ct.c_double)]

        class WithUnion(ct.Structure):
            _fields_ = [("tag", ct.c_char), ("v", FD), ("s", ct.c_short)]

        lib.wu_sum.restype, lib.wu_sum.argtypes = ct.c_double, [WithUnion]
        w = WithUnion(b"\x02", FD(d=0.5), 40)
        return lib.wu_sum(w)

    assert agree(case) == 42.5


def test_packed_structs(agree: Any) -> None:
    def case(b: Any) -> Any:
        ct, lib = b.ct, b.load("edge")

        class Packed(ct.Structure):
            _pack_ = 1
            _fields_ = [("c", ct.c_char), ("i", ct.c_int), ("s", ct.c_short)]

        lib.packed_sum_ptr.restype, lib.packed_sum_ptr.argtypes = ct.c_int, [ct.POINTER(Packed)]
        return ct.sizeof(Packed), lib.packed_sum_ptr(ct.byref(Packed(b"\x01", 2, 3)))

    assert agree(case) == (7, 6)


def test_packed_struct_by_value_on_i686_and_refused_on_x86_64() -> None:
    # In-process ctypes crashes here on x86_64 (a packed struct with unaligned members is passed in
    # memory, which libffi cannot describe); bitbridge does it on i386 and refuses it on x86_64.
    class Packed(bct.Structure):
        _pack_ = 1
        _fields_ = [("c", bct.c_char), ("i", bct.c_int), ("s", bct.c_short)]

    i686, x64 = BRIDGED
    f = i686.load("edge").packed_make
    f.restype, f.argtypes = Packed, [bct.c_int]
    p = f(1000)
    assert (p.c, p.i, p.s) == (b"x", 1000, -3)
    g = x64.load("edge")["packed_make"]
    g.restype, g.argtypes = Packed, [bct.c_int]
    with pytest.raises(bitbridge.SignatureError, match="packed"):
        g(1000)


def test_nested_arrays_of_structs_by_value(agree: Any) -> None:
    def case(b: Any) -> Any:
        ct, lib = b.ct, b.load("edge")

        class Pt(ct.Structure):
            _fields_ = [("x", ct.c_double), ("y", ct.c_double)]

        class Poly(ct.Structure):
            _fields_ = [("n", ct.c_int), ("pts", Pt * 4)]

        lib.poly_sumx.restype, lib.poly_sumx.argtypes = ct.c_double, [Poly]
        return lib.poly_sumx(Poly(3, (Pt * 4)(Pt(1, 0), Pt(2, 0), Pt(3.5, 0), Pt(100, 0))))

    assert agree(case) == 6.5


def test_small_struct_returned(agree: Any) -> None:
    def case(b: Any) -> Any:
        ct, lib = b.ct, b.load("edge")

        class Small(ct.Structure):
            _fields_ = [("c", ct.c_char), ("s", ct.c_short), ("i", ct.c_int)]

        lib.small_make.restype, lib.small_make.argtypes = Small, [ct.c_char, ct.c_short, ct.c_int]
        r = lib.small_make(b"q", -2, 1 << 30)
        return r.c, r.s, r.i

    assert agree(case) == (b"q", -2, 1 << 30)


def test_pointer_members_point_at_copied_memory(agree: Any) -> None:
    def case(b: Any) -> Any:
        ct, lib = b.ct, b.load("edge")

        class Buf(ct.Structure):
            _fields_ = [("n", ct.c_int), ("data", ct.POINTER(ct.c_int))]

        data = (ct.c_int * 4)(1, 2, 3, 4)
        buf = Buf(4, ct.cast(data, ct.POINTER(ct.c_int)))
        lib.buf_sum.restype, lib.buf_sum.argtypes = ct.c_int, [ct.POINTER(Buf)]
        lib.buf_sum_val.restype, lib.buf_sum_val.argtypes = ct.c_int, [Buf]
        return lib.buf_sum(ct.byref(buf)), lib.buf_sum_val(buf)

    assert agree(case) == (10, 10)


def test_out_and_inout_parameters(agree: Any) -> None:
    def case(b: Any) -> Any:
        ct, lib = b.ct, b.load("edge")
        lib.get_two.argtypes = [ct.POINTER(ct.c_int), ct.POINTER(ct.c_double)]
        lib.get_two.restype = None
        a, d = ct.c_int(), ct.c_double()
        lib.get_two(ct.byref(a), ct.byref(d))
        lib.inc_all.argtypes = [ct.POINTER(ct.c_int), ct.c_int]
        lib.inc_all.restype = None
        v = (ct.c_int * 3)(1, 2, 3)
        lib.inc_all(v, 3)
        return a.value, d.value, list(v)

    assert agree(case) == (7, 2.5, [2, 3, 4])


def test_paramflags_give_directions_and_return_outputs(agree: Any) -> None:
    def case(b: Any) -> Any:
        ct, lib = b.ct, b.load("edge")
        proto = ct.CFUNCTYPE(None, ct.POINTER(ct.c_int), ct.POINTER(ct.c_double))
        get_two = proto(("get_two", lib), ((2, "a"), (2, "b")))
        return get_two()

    assert agree(case) == (7, 2.5)


def test_handles_round_trip(agree: Any) -> None:
    def case(b: Any) -> Any:
        ct, lib = b.ct, b.load("edge")
        lib.counter_new.restype, lib.counter_new.argtypes = ct.c_void_p, [ct.c_int, ct.c_int]
        lib.counter_next.restype, lib.counter_next.argtypes = ct.c_int, [ct.c_void_p]
        lib.counter_free.restype, lib.counter_free.argtypes = None, [ct.c_void_p]
        h = lib.counter_new(10, 5)
        vals = [lib.counter_next(h) for _ in range(3)]
        lib.counter_free(h)
        return vals, isinstance(h, int)

    assert agree(case) == ([10, 15, 20], True)


def test_pointer_result_reads_in_the_server() -> None:
    for b in BRIDGED:
        lib = b.load("edge")
        ints = (bct.c_int * 3)(5, 6, 7)
        lib.keep.argtypes, lib.keep.restype = [bct.POINTER(bct.c_int), bct.c_int], None
        # A pointer returned by the library: RemotePointer reads the server's memory.
        lib.greet.restype = bct.POINTER(bct.c_char)
        p = lib.greet()
        assert isinstance(p, bitbridge.RemotePointer) and p
        assert b"".join(p[i] for i in range(5)) == b"hello"
        assert lib.server.read_cstring(p.value) == b"hello from C"
        del ints


def test_bit_fields_are_a_clear_error() -> None:
    class Flags(bct.Structure):
        _fields_ = [("a", bct.c_int, 3), ("b", bct.c_int, 5)]

    f = BRIDGED[0].load("edge")["id_int"]
    f.argtypes = [bct.POINTER(Flags)]
    with pytest.raises(bitbridge.SignatureError, match="bit-field"):
        f(Flags())


def test_an_address_of_this_process_cannot_cross() -> None:
    f = BRIDGED[0].load("edge")["is_null"]
    f.argtypes = [bct.c_void_p]
    x = bct.c_int(5)
    with pytest.raises(bitbridge.ArgumentError, match="this process"):
        f(bct.c_void_p(ctypes.addressof(x)))
    assert isinstance(bct.addressof(x), bct.HostAddress)
