"""``Client64``: msl-loadlib's client, whose ``Server32`` module runs in a 32-bit Python inside a
bitbridge server (CBOR over shared memory instead of pickle over a port)."""

from __future__ import annotations

import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _native
from ._errors import (
    ConnectionTimeoutError,
    Error,
    ResponseTimeoutError,
    Server32Error,
    ServerDied,
    StartupTimeout,
    Timeout,
)
from ._server32 import Server32, _construct

PY_VERSION = "3.11"
SERVER_NAME = f"bitbridge-server-python{PY_VERSION}-i686"
LIBPYTHON = f"libpython{PY_VERSION}.so.1.0"
# Where 32-bit libraries live: Debian/Ubuntu multiarch, Debian's lib32, Fedora/RHEL (i686 packages).
SYSTEM_DIRS = ["/usr/lib/i386-linux-gnu", "/lib/i386-linux-gnu", "/usr/lib32", "/usr/lib"]
INSTALL_HINT = (
    f"install a 32-bit Python {PY_VERSION} library: on Debian/Ubuntu `sudo dpkg --add-architecture i386 && "
    f"sudo apt-get update && sudo apt-get install libpython{PY_VERSION}:i386`; on Fedora `sudo dnf install "
    f"python3-libs.i686` (for Python {PY_VERSION}); or unpack the .deb files (`apt-get download "
    f"libpython{PY_VERSION}:i386 libpython{PY_VERSION}-stdlib:i386 libpython{PY_VERSION}-minimal:i386 ...` then "
    "`dpkg-deb -x FILE ROOT`) and pass python32=ROOT (or set BITBRIDGE_PYTHON32=ROOT)"
)


@dataclass
class Python32:
    """A 32-bit CPython found on this machine: the library, its ``PYTHONHOME``, the folders to put on
    the server's library path."""

    library: str
    home: str
    library_dirs: list[str]

    @property
    def version(self) -> str:
        return f"{PY_VERSION} (32-bit, {self.library})"


def _is_i386(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError:
        return False
    # ELF, 32-bit class, machine EM_386 (3) at offset 18.
    return head[:4] == b"\x7fELF" and head[4] == 1 and head[18] == 3


def find_python32(where: str | os.PathLike | None) -> Python32:
    """The 32-bit Python to embed: ``where`` (a root folder where the .debs were unpacked, a prefix, or
    the ``libpython3.11.so.1.0`` file), else ``BITBRIDGE_PYTHON32``, else the system's 32-bit library
    folders. Raises ``ConnectionTimeoutError`` naming what to install."""
    given = where if where is not None else os.environ.get("BITBRIDGE_PYTHON32")
    looked: list[str] = []
    if given:
        g = Path(given)
        if g.is_file():
            candidates = [(g, g.parent.parent if g.parent.name == "i386-linux-gnu" else g.parent)]
        else:
            candidates = [
                (g / "usr/lib/i386-linux-gnu" / LIBPYTHON, g / "usr"),
                (g / "lib/i386-linux-gnu" / LIBPYTHON, g),
                (g / "lib" / LIBPYTHON, g),
            ]
        for lib, home in candidates:
            looked.append(str(lib))
            if lib.is_file() and _is_i386(str(lib)):
                root = home.parent if home.name == "usr" else home
                dirs = [
                    str(lib.parent),
                    str(root / "lib/i386-linux-gnu"),
                    str(root / "usr/lib/i386-linux-gnu"),
                ]
                home_dir = home if (home / "lib" / f"python{PY_VERSION}").is_dir() else Path(sys.base_prefix)
                return Python32(
                    str(lib), str(home_dir), list(dict.fromkeys(d for d in dirs if os.path.isdir(d)))
                )
    else:
        for d in SYSTEM_DIRS:
            lib = Path(d) / LIBPYTHON
            looked.append(str(lib))
            if lib.is_file() and _is_i386(str(lib)):
                return Python32(str(lib), "/usr", [])
    raise ConnectionTimeoutError(
        f"no 32-bit Python {PY_VERSION} found (looked at: {', '.join(looked)}); {INSTALL_HINT}"
    )


def _paths(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [os.fspath(value)]
    return [os.fspath(v) for v in value]


class Client64:
    """msl-loadlib's ``Client64``: starts a 32-bit Python in a bitbridge server, imports ``module32``
    there and constructs its ``Server32`` subclass; ``request32`` calls its methods.

    Parameters are msl-loadlib's. ``module32``: a module name or the path of a ``.py`` file.
    ``append_sys_path``: folders added to the server's ``sys.path`` (after this process's);
    ``append_environ_path``: folders added to its ``PATH``; ``add_dll_directory``: accepted, Windows only
    (ignored here). ``host=None`` is msl-loadlib's mock mode: the module is imported and its class
    constructed in *this* process (so the library must be 64-bit), with the same calls and errors.
    ``port`` and ``protocol`` are accepted and ignored (there is no port and no pickle).
    ``rpc_timeout`` (seconds) bounds each request: one that takes longer kills the server and raises
    ``ResponseTimeoutError``. ``timeout`` (seconds, default 10) bounds the start: the server, the
    interpreter, the import and the constructor. ``server32_dir``: where the server program is (default:
    this package's). ``python32``: which 32-bit Python to embed (see ``find_python32``). Any other
    keyword argument goes to the ``Server32`` subclass's constructor *with its type* (msl-loadlib turns
    them into strings).

    Raises ``ConnectionTimeoutError`` (with ``reason``: the traceback or the server's output) when the
    server, the module or its class cannot be started.
    """

    def __init__(
        self,
        module32: str | os.PathLike,
        *,
        add_dll_directory: Any = None,
        append_environ_path: Any = None,
        append_sys_path: Any = None,
        host: str | None = "127.0.0.1",
        port: int | None = 0,
        protocol: int = 5,
        rpc_timeout: float | None = None,
        server32_dir: str | os.PathLike | None = None,
        timeout: float = 10,
        python32: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> None:
        self._module32 = os.fspath(module32)
        self._host = host
        self._port = port
        self._service: Any = None
        self._mock: Any = None
        self._rpc_timeout = rpc_timeout
        self._outputs: tuple[io.BytesIO, io.BytesIO] | None = None
        sys_path = list(sys.path) + [p for p in _paths(append_sys_path) if p not in sys.path]
        env_path = [os.getcwd(), *_paths(append_environ_path)]
        if host is None:
            self._mock = _mock(self._module32, sys_path, env_path, kwargs)
            self._lib32_path = self._mock.path
            return
        py32 = find_python32(python32)
        server = Path(server32_dir) if server32_dir is not None else Path(__file__).with_name("_servers")
        program = server / SERVER_NAME
        if not program.is_file():
            raise ConnectionTimeoutError(
                f"the 32-bit Python server {program} does not exist (server32_dir={server32_dir!r})"
            )
        env = {"PYTHONHOME": py32.home, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1"}
        start = {
            "module32": self._module32,
            "sys_path": sys_path,
            "environ_path": env_path,
            "host": host,
            "port": port,
            "kwargs": kwargs,
        }
        try:
            self._service = _native.Service.spawn(
                str(program),
                start,
                env=env,
                library_dirs=py32.library_dirs,
                startup_timeout=timeout,
                call_timeout=rpc_timeout,
            )
        except Server32Error as e:
            err = ConnectionTimeoutError(f"{self._module32}: {e.name}: {e.value}\n{e.traceback}".rstrip())
            err.reason = e.traceback or e.value
            raise err from None
        except (StartupTimeout, Timeout) as e:
            err = ConnectionTimeoutError(
                f"the 32-bit server for {self._module32!r} did not start within timeout={timeout} s: the "
                f"interpreter, the module's import or its class's constructor did not finish ({e})"
            )
            err.reason = str(e)
            raise err from None
        except ServerDied as e:
            err = ConnectionTimeoutError(f"the 32-bit server for {self._module32!r} did not start: {e}")
            err.reason = getattr(e, "stderr", "") or str(e)
            raise err from None
        self._lib32_path = self.request32("path")

    # The msl-loadlib API.

    @property
    def host(self) -> str | None:
        """The ``host`` given (``None`` in mock mode); there is no network address."""
        return self._host

    @property
    def port(self) -> int | None:
        """The ``port`` given; there is no port."""
        return self._port

    @property
    def connection(self) -> Any:
        """The server (``None`` once shut down, and in mock mode)."""
        return self._service

    @property
    def lib32_path(self) -> str:
        """The path of the library the ``Server32`` object loaded."""
        return self._lib32_path

    def request32(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Calls method ``name`` of the ``Server32`` object with the arguments (or returns attribute or
        property ``name``). Values cross as data (numbers, str, bytes, lists, tuples, dicts, sets,
        None, numpy arrays and buffers), never as pickles. Raises ``Server32Error`` (with ``name``,
        ``value`` and the server's ``traceback``) if it raised, ``ResponseTimeoutError`` after
        ``rpc_timeout``, ``bitbridge.ServerDied`` if the library crashed the server."""
        if self._mock is not None:
            attr = getattr(self._mock, name)
            return attr(*args, **kwargs) if callable(attr) else attr
        if self._service is None:
            raise Error("the 32-bit server was shut down")
        try:
            return self._service.invoke(name, args, kwargs)
        except Timeout as e:
            raise ResponseTimeoutError(
                f"request32({name!r}) took longer than rpc_timeout={self._rpc_timeout} s: {e}"
            ) from None

    def shutdown_server32(self, kill_timeout: float = 10) -> tuple[io.BytesIO, io.BytesIO]:
        """Stops the server (calling the object's ``shutdown_handler``); returns its ``(stdout,
        stderr)`` as byte streams. Safe to call again (the same streams come back)."""
        if self._mock is not None:
            self._mock.shutdown_handler()
            self._mock = None
            self._outputs = (io.BytesIO(), io.BytesIO())
        if self._service is not None:
            service, self._service = self._service, None
            try:
                _code, _signal, out, err = service.shutdown()
            except Error as e:
                out, err = "", str(e)
            self._outputs = (io.BytesIO(out.encode()), io.BytesIO(err.encode()))
        if self._outputs is None:
            self._outputs = (io.BytesIO(), io.BytesIO())
        for s in self._outputs:
            s.seek(0)
        return self._outputs

    def __enter__(self) -> Client64:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown_server32()

    def __del__(self) -> None:
        try:
            if getattr(self, "_service", None) is not None or getattr(self, "_mock", None) is not None:
                self.shutdown_server32()
        except Exception:  # noqa: S110 - nothing to report to at interpreter exit
            pass

    def __repr__(self) -> str:
        lib = os.path.basename(getattr(self, "_lib32_path", "") or "")
        if self._mock is not None:
            return f"<{type(self).__name__} lib={lib} address=None (mocked)>"
        if self._service is None:
            return f"<{type(self).__name__} lib={lib} address=None (closed)>"
        return f"<{type(self).__name__} lib={lib} pid={self._service.pid}>"


def _mock(module32: str, sys_path: list[str], env_path: list[str], kwargs: dict) -> Server32:
    """msl-loadlib's mock mode: the module imported here, its class constructed here."""
    options = {"module32": module32, "sys_path": sys_path, "environ_path": env_path, "kwargs": kwargs}
    try:
        return _construct(options)  # type: ignore[no-any-return]
    except Exception as e:
        err = ConnectionTimeoutError(f"{module32}: {type(e).__name__}: {e}")
        err.reason = str(e)
        raise err from e


__all__ = ["Client64", "Server32", "find_python32"]
