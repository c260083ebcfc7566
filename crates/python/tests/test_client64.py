"""Client64/Server32: msl-loadlib's pattern, the Server32 module running in a 32-bit CPython inside a
bitbridge server. The modules in server32/ are written as msl-loadlib's docs describe (only the import
differs); the clients below are Client64 subclasses whose methods call request32."""

from __future__ import annotations

import math
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import bitbridge
import numpy as np
import pytest
from bitbridge import Client64
from conftest import build

MODULES = Path(__file__).with_name("server32")


@pytest.fixture(autouse=True, scope="module")
def libraries() -> None:
    os.environ["ECHO_LIBRARY"] = build("ctest", 32)
    os.environ["CPP_LIBRARY"] = build("cpp_lib", 32)
    os.environ["FORTRAN_LIBRARY"] = build("fortran_lib", 32)
    os.environ["LABVIEW_LIBRARY"] = build("labview", 32)


class Echo64(Client64):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(module32="echo32", append_sys_path=MODULES, **kwargs)

    def received(self, *args: Any, **kwargs: Any) -> Any:
        return self.request32("received", *args, **kwargs)


class Cpp64(Client64):
    def __init__(self) -> None:
        super().__init__(module32=MODULES / "cpp32.py")

    def add(self, a: int, b: int) -> int:
        return self.request32("add", a, b)

    def scalar_multiply(self, a: float, xin: list[float]) -> list[float]:
        return self.request32("scalar_multiply", a, xin)


def test_the_module_runs_in_a_32_bit_python() -> None:
    with Echo64() as echo:
        assert echo.request32("bits") == 32
        assert echo.lib32_path == os.environ["ECHO_LIBRARY"]
        assert echo.request32("add", 2, 3) == 5
    assert sys.maxsize > 2**32


VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**64,
    -(2**200) + 7,
    1.5,
    float("inf"),
    -0.0,
    complex(1.5, -2),
    "",
    "text with spaces; a=b, and \u263a",
    b"\x00\xff bytes",
    bytearray(b"mutable"),
    [1, [2, [3, []]]],
    (1, (2, "x"), ()),
    {"a": 1, 2: "b", (3, 4): [5], None: {}},
    {1, 2, 3},
    frozenset({"x"}),
]


def test_every_python_type_survives_both_ways() -> None:
    with Echo64(flag=True, number=2.5, text="a=b; c d", items=[1, 2]) as echo:
        args, kwargs = echo.received(*VALUES, key=VALUES)
        assert list(args) == VALUES and kwargs == {"key": VALUES}
        assert [type(a) for a in args] == [type(v) for v in VALUES]
        assert echo.request32("kwargs") == {"flag": True, "number": 2.5, "text": "a=b; c d", "items": [1, 2]}


def test_numpy_arrays_and_large_values() -> None:
    with Echo64() as echo:
        a = np.arange(1_000_000, dtype=np.float64).reshape(1000, 1000)
        b = np.array([[1, 2], [3, 4]], dtype=np.int16)
        (ra, rb), _ = echo.received(a, b)
        assert (
            isinstance(ra, np.ndarray)
            and ra.dtype == a.dtype
            and ra.shape == a.shape
            and np.array_equal(ra, a)
        )
        assert rb.dtype == np.int16 and rb.tolist() == [[1, 2], [3, 4]]
        big = os.urandom(10 * 1024 * 1024)
        (rbig,), _ = echo.received(big)
        assert rbig == big
        (scalar,), _ = echo.received(np.float32(1.5))
        assert scalar == 1.5


def test_what_cannot_cross_is_a_clear_error() -> None:
    with Echo64() as echo:
        with pytest.raises(TypeError, match=r"cannot send argument 1 a builtins.object"):
            echo.received(object())
        with pytest.raises(bitbridge.Server32Error) as e:
            echo.request32("unsendable")
        assert e.value.name == "TypeError" and "builtins.object" in e.value.value
        assert echo.request32("add", 1, 1) == 2  # the server is fine


def test_errors_come_back_with_the_server_traceback() -> None:
    with Echo64() as echo:
        with pytest.raises(bitbridge.Server32Error) as e:
            echo.request32("fail", "out of range")
        assert e.value.name == "ValueError" and e.value.value == "out of range"
        assert "echo32.py" in e.value.traceback and "raise ValueError(message)" in e.value.traceback
        with pytest.raises(bitbridge.Server32Error) as e:
            echo.request32("no_such_method")
        assert e.value.name == "AttributeError"


def test_a_crash_is_server_died_and_a_timeout_response_timeout() -> None:
    with Echo64() as echo:
        with pytest.raises(bitbridge.ServerDied) as e:
            echo.request32("crash")
        assert e.value.signal == 11
    with Echo64(rpc_timeout=0.5) as echo:
        assert echo.request32("sleep", 0.01) == 0.01
        with pytest.raises(bitbridge.ResponseTimeoutError):
            echo.request32("sleep", 5)


def test_shutdown_returns_the_servers_output_and_runs_the_handler() -> None:
    echo = Echo64()
    echo.request32("add", 1, 2)
    assert echo.request32("shout", "hello") == 5
    out, err = echo.shutdown_server32()
    text = out.read().decode()
    assert "HELLO" in text and "shutdown after 1 additions" in text
    assert "to stderr" in err.read().decode()
    assert echo.shutdown_server32()[0].read().decode() == text  # again: the same streams
    with pytest.raises(bitbridge.Error):
        echo.request32("add", 1, 2)


def test_a_cpp_library_wrapper() -> None:
    with Cpp64() as cpp:
        assert cpp.add(-5, 2**30) == 2**30 - 5
        assert cpp.request32("subtract", 44.25, 2.0) == 42.25
        assert cpp.request32("add_or_subtract", 1.0, 2.0, False) == -1.0
        assert cpp.scalar_multiply(2.0, [1.0, 2.5, -3.0]) == [2.0, 5.0, -6.0]
        assert cpp.request32("reverse_string_v1", "hello world") == "dlrow olleh"
        assert cpp.request32("distance_4_points", [(0, 0), (3, 4), (3, 0), (0, 0)]) == pytest.approx(12.0)
        assert cpp.request32("pointer_size")[0] == 4


def test_a_fortran_library_wrapper() -> None:
    with Client64(MODULES / "fortran32.py") as f:
        assert f.request32("sum_8bit", 100, 27) == 127
        assert f.request32("factorial", 10) == 3628800.0
        assert f.request32("standard_deviation", [1.0, 2.0, 3.0, 4.0]) == pytest.approx(1.2909944487358056)
        assert f.request32("besselj0", 2.5) == pytest.approx(-0.048383776468197996)


def test_a_labview_style_function_with_three_outputs() -> None:
    with Client64(MODULES / "labview32.py") as lv:
        x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
        mean, var, std = lv.request32("stdev", x)
        assert (mean, var) == (5.0, 7.5) and std == pytest.approx(math.sqrt(7.5))
        assert lv.request32("stdev", x, weighting=1)[1] == pytest.approx(60 / 9)


def test_mock_mode_runs_the_module_here() -> None:
    os.environ["LABVIEW_LIBRARY"] = build("labview", 64)
    try:
        with Client64(MODULES / "labview32.py", host=None) as lv:
            assert lv.host is None and "mocked" in repr(lv)
            assert lv.request32("stdev", [1.0, 2.0, 3.0])[0] == 2.0
    finally:
        os.environ["LABVIEW_LIBRARY"] = build("labview", 32)


FAILURES = {
    "syntax_error": ("def broken(:\n", "SyntaxError"),
    "import_error": ("import no_such_module_anywhere\n", "ModuleNotFoundError"),
    "raises_at_import": ("raise RuntimeError('not today')\n", "RuntimeError"),
    "no_subclass": (
        "from bitbridge import Server32\nclass NotAServer:\n    pass\n",
        "defines no subclass of Server32",
    ),
    "constructor_raises": (
        "class S(Server32):\n    def __init__(self, host, port):\n        raise OSError('device busy')\n",
        "device busy",
    ),
    "wrong_signature": ("class S(Server32):\n    def __init__(self):\n        pass\n", "TypeError"),
    "library_missing": (
        "class S(Server32):\n    def __init__(self, host, port):\n        super().__init__('/no/such/lib.so', 'cdll', host, port)\n",
        "/no/such/lib.so",
    ),
    "library_64_bit": (
        "class S(Server32):\n    def __init__(self, host, port):\n        super().__init__(os.environ['LIB64'], 'cdll', host, port)\n",
        "wrong ELF class",
    ),
    "libtype_windll": (
        "class S(Server32):\n    def __init__(self, host, port):\n        super().__init__(os.environ['ECHO_LIBRARY'], 'windll', host, port)\n",
        "not supported",
    ),
    "libtype_net": (
        "class S(Server32):\n    def __init__(self, host, port):\n        super().__init__('x.dll', 'net', host, port)\n",
        "not supported",
    ),
    "unknown_kwarg": (
        "class S(Server32):\n    def __init__(self, host, port):\n        super().__init__(os.environ['ECHO_LIBRARY'], 'cdll', host, port)\n",
        "unexpected keyword argument 'colour'",
    ),
    "exits_at_import": ("import sys\nsys.exit(3)\n", "SystemExit"),
    "os_exit_in_constructor": (
        "class S(Server32):\n    def __init__(self, host, port):\n        os._exit(4)\n",
        "exited with status 4",
    ),
    "segfault_at_import": ("import ctypes\nctypes.string_at(0)\n", "signal 11"),
    "hangs_in_constructor": (
        "import time\nclass S(Server32):\n    def __init__(self, host, port):\n        time.sleep(60)\n",
        "did not start",
    ),
    "base_class_itself": ("from bitbridge import Server32 as S\n", "defines no subclass of Server32"),
}


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_each_way_a_module_can_fail_to_start(case: str, tmp_path: Path) -> None:
    body, expected = FAILURES[case]
    module = tmp_path / f"fail_{case}.py"
    module.write_text("import os\nfrom bitbridge import Server32\n" + textwrap.dedent(body))
    os.environ["LIB64"] = build("ctest", 64)
    kwargs = {"colour": "red"} if case == "unknown_kwarg" else {}
    with pytest.raises(bitbridge.ConnectionTimeoutError) as e:
        Client64(module, timeout=2, **kwargs)
    assert expected in str(e.value) + e.value.reason, str(e.value)


def test_a_missing_module_and_a_missing_python_are_named(tmp_path: Path) -> None:
    with pytest.raises(bitbridge.ConnectionTimeoutError, match="no module file"):
        Client64(tmp_path / "nope.py")
    with pytest.raises(bitbridge.ConnectionTimeoutError, match="ModuleNotFoundError"):
        Client64("no_such_module_name_anywhere")
    with pytest.raises(bitbridge.ConnectionTimeoutError, match="apt-get install libpython3.11:i386"):
        Client64("echo32", python32=tmp_path)
    with pytest.raises(bitbridge.ConnectionTimeoutError, match="does not exist"):
        Client64("echo32", server32_dir=tmp_path)


def test_server32_static_methods() -> None:
    assert not bitbridge.Server32.is_interpreter()
    assert bitbridge.Server32.version().startswith("3.11 (32-bit")
