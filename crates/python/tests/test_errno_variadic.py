"""errno after a call (use_errno, get_errno) and variadic functions, through the system's libc."""

from __future__ import annotations

from typing import Any


def test_strtol_sets_errno(agree: Any) -> None:
    def case(b: Any) -> Any:
        ct, libc = b.ct, b.libc()
        libc.strtol.restype = ct.c_long if b.ct.__name__ == "ctypes" else b.ct.c_long
        libc.strtol.argtypes = [ct.c_char_p, ct.c_void_p, ct.c_int]
        ct.set_errno(0)
        big = libc.strtol(b"99999999999999999999999", None, 10)
        e1 = ct.get_errno()
        ct.set_errno(0)
        small = libc.strtol(b"-123", None, 10)
        return big > 0, e1, small, ct.get_errno()

    assert agree(case) == (True, 34, -123, 0)


def test_snprintf_with_mixed_variadic_arguments(agree: Any) -> None:
    def case(b: Any) -> Any:
        ct, libc = b.ct, b.libc()
        libc.snprintf.argtypes = [
            ct.c_char_p,
            ct.c_size_t if b.ct.__name__ == "ctypes" else b.ct.c_size_t,
            ct.c_char_p,
        ]
        libc.snprintf.restype = ct.c_int
        buf = ct.create_string_buffer(100)
        n = libc.snprintf(
            buf,
            100,
            b"%d %s %.3f %c %lld",
            42,
            b"str",
            ct.c_double(2.5),
            ct.c_int(ord("x")),
            ct.c_longlong(-(2**40)),
        )
        return n, buf.value

    assert agree(case)[1] == b"42 str 2.500 x -1099511627776"
