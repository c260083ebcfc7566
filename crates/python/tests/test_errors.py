"""Each failure is a typed exception naming what was wrong, and loses nothing: the interpreter and (but
for crashes and timeouts) the server carry on."""

from __future__ import annotations

import ctypes
import os
from typing import Any

import bitbridge
import pytest
from bitbridge import ctypes as bct
from conftest import BRIDGED, build


def test_missing_library_is_library_not_found_and_os_error(tmp_path: Any) -> None:
    with pytest.raises(bitbridge.LibraryNotFound) as e:
        bct.CDLL(str(tmp_path / "nope.so"))
    assert isinstance(e.value, OSError) and "nope.so" in str(e.value)


def test_a_text_file_is_not_a_library(tmp_path: Any) -> None:
    p = tmp_path / "libfake.so"
    p.write_text("INPUT(-lm)\n")
    with pytest.raises(bitbridge.NotALibrary, match="not a shared library"):
        bct.CDLL(str(p))


def test_missing_symbol_is_an_attribute_error() -> None:
    lib = BRIDGED[0].load("edge")
    with pytest.raises(bitbridge.SymbolNotFound) as e:
        _ = lib.no_such_function
    assert isinstance(e.value, AttributeError) and e.value.symbol == "no_such_function"
    assert not hasattr(lib, "still_no_such_function")


def test_bad_arguments_name_the_argument_and_are_ctypes_argument_errors() -> None:
    f = BRIDGED[0].load("edge")["id_uchar"]
    f.argtypes, f.restype = [bct.c_ubyte], bct.c_ubyte
    with pytest.raises(
        bitbridge.ArgumentError, match=r"argument 1: 300 does not fit in `unsigned char`"
    ) as e:
        f(300)
    assert isinstance(e.value, ctypes.ArgumentError) and isinstance(e.value, TypeError)
    with pytest.raises(bitbridge.ArgumentError, match="expected an integer for `unsigned char`, got str"):
        f("no")
    assert f(255) == 255  # nothing lost: the next call works


def test_nested_argument_errors_give_the_path() -> None:
    class Pt(bct.Structure):
        _fields_ = [("x", bct.c_double), ("y", bct.c_double)]

    class Poly(bct.Structure):
        _fields_ = [("n", bct.c_int), ("pts", Pt * 4)]

    f = BRIDGED[0].load("edge")["poly_sumx"]
    f.restype, f.argtypes = bct.c_double, [Poly]
    with pytest.raises(bitbridge.ArgumentError, match=r"argument 1: \.n: expected an integer"):
        f(("x", []))


def test_a_segfault_is_server_died_with_the_signal_and_the_interpreter_lives(bridged: Any) -> None:
    lib = bridged.load("edge", call_timeout=10)
    pid = lib.server.pid
    with pytest.raises(bitbridge.ServerDied) as e:
        lib.crash_segv()
    assert e.value.signal == 11 and e.value.pid == pid and "SIGSEGV" in str(e.value)
    with pytest.raises((bitbridge.ServerDied, bitbridge.ShutDown)):
        lib.crash_segv()


def test_exit_and_abort_report_status_and_stderr(bridged: Any) -> None:
    lib = bridged.load("edge", fresh=True)
    lib.crash_exit.argtypes = [bct.c_int]
    with pytest.raises(bitbridge.ServerDied) as e:
        lib.crash_exit(3)
    assert e.value.exit_code == 3 and e.value.signal is None
    lib = bridged.load("edge", fresh=True)
    with pytest.raises(bitbridge.ServerDied) as e:
        lib.say_and_crash()
    assert e.value.stderr and e.value.signal is not None


def test_a_hung_call_times_out_and_restart_brings_the_library_back(bridged: Any) -> None:
    lib = bridged.load("edge", call_timeout=0.3, restart_on_failure=True)
    with pytest.raises(bitbridge.Timeout) as e:
        lib.hang()
    assert isinstance(e.value, TimeoutError)
    lib.id_int.argtypes, lib.id_int.restype = [bct.c_int], bct.c_int
    assert lib.id_int(41) == 41  # a fresh server, the same library and functions


def test_wrong_bitness_and_dependencies_are_load_errors(tmp_path: Any) -> None:
    srv = bitbridge.Server.spawn("i686")
    with pytest.raises(bitbridge.LoadError) as e:
        srv.load(build("edge", 64))
    assert isinstance(e.value, OSError) and "wrong ELF class" in str(e.value)
    srv.shutdown()


def test_unknown_server_option_is_a_type_error() -> None:
    with pytest.raises(TypeError, match='unknown server option "timeout"'):
        bct.CDLL(build("edge", 32), timeout=3)


def test_missing_server_is_server_not_found(tmp_path: Any) -> None:
    with pytest.raises(bitbridge.ServerNotFound) as e:
        bct.CDLL(build("edge", 32), server_dir=str(tmp_path))
    assert e.value.arch == "i686"


def test_declaration_errors_give_line_and_column() -> None:
    lib = BRIDGED[0].load("ctest")
    with pytest.raises(bitbridge.DeclarationError) as e:
        lib.function("double sum(double *f, int n")
    assert e.value.column is not None and "ends too early" in str(e.value)
    # A declaration that cannot be used fails when it is used, not the whole header.
    h = lib.declare("struct S { int a; };\nstruct S f(struct T t);\nint g(void);\n")
    assert "g" in h.functions
    with pytest.raises(bitbridge.DeclarationError) as e:
        h.f  # noqa: B018
    assert e.value.line == 2 and "struct T" in str(e.value)


def test_shutdown_returns_what_the_library_printed(bridged: Any) -> None:
    lib = bridged.load("edge", fresh=True)
    lib.chatter.argtypes = [bct.c_int]
    lib.chatter(2)
    code, signal, out, err = lib.server.shutdown()
    assert code == 0 and signal is None and out.count("\n") >= 2
    with pytest.raises(bitbridge.ShutDown):
        lib.chatter(1)


def test_no_server_outlives_its_library(bridged: Any) -> None:
    lib = bridged.ct.CDLL(build("edge", bridged.bits))
    pid = lib.server.pid
    del lib
    import gc
    import time

    gc.collect()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            stat = open(f"/proc/{pid}/stat").read().split()
            if stat[2] == "Z":
                break
        except (ProcessLookupError, FileNotFoundError):
            break
        time.sleep(0.01)
    else:
        raise AssertionError(f"server {pid} still runs after its library was dropped")


def test_a_forked_child_cannot_use_its_parents_server(bridged: Any) -> None:
    lib = bridged.load("edge", fresh=True)
    lib.id_int.argtypes, lib.id_int.restype = [bct.c_int], bct.c_int
    assert lib.id_int(1) == 1
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its calls are refused, and dropping the library leaves the server alone
        try:
            lib.id_int(2)
            os.write(w, b"called")
        except bitbridge.ForkedError as e:
            os.write(w, b"forked" if "open the library again in the child" in str(e) else b"message")
        except BaseException as e:  # noqa: BLE001 - report anything else to the parent
            os.write(w, repr(e).encode()[:200])
        finally:
            del lib
            import gc

            gc.collect()
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    assert os.read(r, 300) == b"forked"
    for i in range(200):  # the parent's server is untouched
        assert lib.id_int(i) == i
    lib.server.shutdown()
