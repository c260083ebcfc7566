"""Every row of the ctypes type table through `id_<type>(x)` identity functions at the type's limits, the
aliased types with bitbridge's distinct classes, the ambiguity warning, and sizes per target."""

from __future__ import annotations

import ctypes
import math
import subprocess
import warnings
from typing import Any

import bitbridge
import pytest
from bitbridge import ctypes as bct
from conftest import BRIDGED, build

# (ctypes class name, fixture suffix, values at the limits of the type on the *server's* target)
LIMITS_32 = {"long": (-(2**31), 2**31 - 1), "ulong": (0, 2**32 - 1)}
ROWS: list[tuple[str, str, tuple]] = [
    ("c_bool", "bool", (True, False)),
    ("c_char", "char", (b"a", b"\x7f", b"\x00")),
    ("c_wchar", "wchar", ("x", "\u263a", "\U0001f600")),
    ("c_byte", "schar", (-128, 127)),
    ("c_ubyte", "uchar", (0, 255)),
    ("c_short", "short", (-(2**15), 2**15 - 1)),
    ("c_ushort", "ushort", (0, 2**16 - 1)),
    ("c_int", "int", (-(2**31), 2**31 - 1)),
    ("c_uint", "uint", (0, 2**32 - 1)),
    ("c_longlong", "longlong", (-(2**63), 2**63 - 1)),
    ("c_ulonglong", "ulonglong", (0, 2**64 - 1)),
    ("c_int8", "i8", (-128, 127)),
    ("c_uint8", "u8", (0, 255)),
    ("c_int16", "i16", (-(2**15), 2**15 - 1)),
    ("c_uint16", "u16", (0, 2**16 - 1)),
    ("c_int32", "i32", (-(2**31), 2**31 - 1)),
    ("c_uint32", "u32", (0, 2**32 - 1)),
    ("c_int64", "i64", (-(2**63), 2**63 - 1)),
    ("c_uint64", "u64", (0, 2**64 - 1)),
    ("c_float", "float", (1.5, -3.25e38, float("inf"))),
    ("c_double", "double", (1 / 3, -1e308, 5e-324)),
    ("c_longdouble", "longdouble", (1 / 3, -2.5e300)),
]


@pytest.mark.parametrize("name,suffix,values", ROWS, ids=[r[0] for r in ROWS])
def test_type_table_row(agree: Any, name: str, suffix: str, values: tuple) -> None:
    def case(b: Any) -> Any:
        t = getattr(b.ct, name)
        f = b.load("edge")[f"id_{suffix}"]
        f.argtypes, f.restype = [t], t
        return [f(v) for v in values] + [f(t(values[0]))]

    agree(case)


@pytest.mark.parametrize(
    "name,suffix", [("c_long", "long"), ("c_ulong", "ulong"), ("c_size_t", "ulong"), ("c_ssize_t", "long")]
)
def test_long_and_size_t_have_the_servers_width(name: str, suffix: str) -> None:
    for b in BRIDGED:
        t = getattr(bct, name)
        f = b.load("edge")[f"id_{suffix}"]
        f.argtypes, f.restype = [t], t
        lo, hi = (
            LIMITS_32[suffix]
            if b.bits == 32
            else ((-(2**63), 2**63 - 1) if suffix == "long" else (0, 2**64 - 1))
        )
        assert (f(lo), f(hi)) == (lo, hi)
        if b.bits == 32:
            with pytest.raises(
                bitbridge.ArgumentError,
                match="does not fit in `long`|does not fit in `unsigned long`|does not fit in `size_t`|does not fit in `ssize_t`",
            ):
                f(hi + 1)
        assert bct.sizeof(t, target="i686" if b.bits == 32 else "x86_64") == b.bits // 8


def test_distinct_classes_are_distinct_and_read_as_ints() -> None:
    names = ["c_long", "c_ulong", "c_size_t", "c_ssize_t", "c_longlong", "c_ulonglong", "c_int64", "c_uint64"]
    classes = [getattr(bct, n) for n in names]
    assert len(set(classes)) == len(classes)
    assert ctypes.c_long is ctypes.c_int64  # the host alias the distinct classes exist for

    class S(bct.Structure):
        _fields_ = [("a", bct.c_long), ("b", bct.c_size_t * 2)]

    s = S(5, (bct.c_size_t * 2)(1, 2))
    assert (s.a + 1, list(s.b)) == (6, [1, 2])
    assert bct.sizeof(S, target="i686") == 12 and bct.sizeof(S) == 24
    assert bct.POINTER(bct.c_long) is bct.POINTER(bct.c_long)


def test_plain_aliased_ctypes_class_warns_on_i686_and_names_the_fix() -> None:
    i686 = BRIDGED[0]
    f = i686.load("edge")["id_longlong"]
    f.argtypes, f.restype = [ctypes.c_longlong], ctypes.c_longlong
    with pytest.warns(bitbridge.AmbiguousTypeWarning, match="bitbridge.ctypes.c_long"):
        assert f(2**40) == 2**40
    # The x86_64 server has no ambiguity: no warning.
    g = BRIDGED[1].load("edge")["id_long"]
    g.argtypes, g.restype = [ctypes.c_long], ctypes.c_long
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert g(-(2**62)) == -(2**62)


def test_restype_long_on_i686_is_the_4_byte_long_not_garbage() -> None:
    # The trap: ctypes.c_long is c_int64, so a 32-bit `long f(void)` read as 8 bytes is garbage.
    f = BRIDGED[0].load("edge")["id_long"]
    f.argtypes, f.restype = [bct.c_long], bct.c_long
    assert f(-7) == -7


def test_sizes_and_offsets_match_gcc() -> None:
    class Mixed(bct.Structure):
        _fields_ = [
            ("c", bct.c_char),
            ("d", bct.c_double),
            ("l", bct.c_long),
            ("ll", bct.c_longlong),
            ("s", bct.c_short),
        ]

    src = build.__globals__["BUILD"] / "offsets.c"
    src.write_text(
        "#include <stdio.h>\n#include <stddef.h>\n"
        "struct M { char c; double d; long l; long long ll; short s; };\n"
        'int main(void){ printf("%zu %zu %zu %zu %zu %zu", sizeof(struct M), offsetof(struct M, d),'
        " offsetof(struct M, l), offsetof(struct M, ll), offsetof(struct M, s), _Alignof(struct M)); return 0; }\n"
    )
    for bits, target in ((32, "i686"), (64, "x86_64")):
        exe = src.with_suffix(f".{bits}")
        subprocess.run(["gcc", f"-m{bits}", "-o", str(exe), str(src)], check=True)
        want = [
            int(x)
            for x in subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
        ]
        ct = bct.ctype_of(Mixed)
        got = [ct.size(target), *ct.offsets(target)[1:], ct.align(target)]
        assert got == want, target


def test_strings_and_void_pointers(agree: Any) -> None:
    def case(b: Any) -> Any:
        ct, lib = b.ct, b.load("edge")
        lib.greet.restype = ct.c_char_p
        lib.maybe_null.restype = ct.c_char_p
        lib.maybe_null.argtypes = [ct.c_int]
        lib.str_len.restype = ct.c_size_t if b.ct is ctypes else bct.c_size_t
        lib.str_len.argtypes = [ct.c_char_p]
        lib.wstr_len.restype = ct.c_int
        lib.wstr_len.argtypes = [ct.c_wchar_p]
        lib.wgreet.restype = ct.c_wchar_p
        lib.is_null.argtypes = [ct.c_void_p]
        buf = ct.create_unicode_buffer("wide \u263a text")
        lib.wupper.argtypes = [ct.POINTER(ct.c_wchar)]
        lib.wupper.restype = None
        lib.wupper(buf)
        return (
            lib.greet(),
            lib.maybe_null(1),
            lib.maybe_null(0),
            lib.str_len(b"four"),
            lib.wstr_len("gr\u00fc\u00df"),
            lib.wgreet(),
            lib.is_null(None),
            buf.value,
        )

    r = agree(case)
    assert r[:3] == (b"hello from C", b"yes", None)


def test_long_double_is_exact(agree: Any) -> None:
    def case(b: Any) -> Any:
        ct, lib = b.ct, b.load("edge")
        lib.ld_third.restype = ct.c_longdouble
        lib.ld_mul.restype = ct.c_longdouble
        lib.ld_mul.argtypes = [ct.c_longdouble, ct.c_longdouble]
        x = ct.c_longdouble(1 / 3)
        return lib.ld_third(), lib.ld_mul(x, 3.0)

    third, prod = agree(case)
    assert math.isclose(third, 1 / 3)
