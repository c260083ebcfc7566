"""``Server32``: the base class of an msl-loadlib style module that wraps a library in a 32-bit Python.

This file is the ``bitbridge`` module *inside* the 32-bit Python of bitbridge's Python server (which
compiles it in; it uses only the standard library), and ``bitbridge.Server32`` in the 64-bit package,
where it serves the mock mode (``Client64(..., host=None)``: the module runs in this process).
"""

from __future__ import annotations

import ctypes
import importlib
import os
import sys
from typing import TYPE_CHECKING

# Only what the 32-bit Python needs at start-up: every import there costs (pathlib and typing alone
# took 50 ms of a 95 ms start).
if TYPE_CHECKING:
    from typing import Any

#: Set by the Python server before it imports the user's module.
_IN_SERVER = False


class Server32:
    """Base class of the class that wraps a library in a 32-bit Python (msl-loadlib's ``Server32``).

    ``path`` is the library; ``libtype`` how to load it: ``"cdll"`` (ctypes.CDLL; the only kind on
    Linux). ``host`` and ``port`` are accepted for compatibility (bitbridge's server talks to its client
    over a socketpair and shared memory, not a port). ``kwargs`` go to ``ctypes.CDLL``.
    Raises ``OSError`` if the library cannot be loaded, ``ValueError`` for another ``libtype``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        libtype: str = "cdll",
        host: Any = None,
        port: Any = None,
        **kwargs: Any,
    ) -> None:
        kind = str(libtype).lower()
        if kind != "cdll":
            hint = {
                "windll": "a __stdcall Windows library",
                "oledll": "a Windows library",
                "net": ".NET",
                "clr": ".NET",
                "com": "COM",
                "activex": "ActiveX",
                "java": "Java",
            }.get(kind, "an unknown kind")
            raise ValueError(
                f"libtype {libtype!r} ({hint}) is not supported by bitbridge's Server32 on Linux: use 'cdll'"
            )
        p = os.fspath(path)
        if os.path.exists(p):
            p = os.path.abspath(p)
        self._lib = ctypes.CDLL(p, **kwargs)
        self._path = p
        self._host = host
        self._port = port

    @property
    def lib(self) -> Any:
        """The ``ctypes.CDLL`` of the library."""
        return self._lib

    @property
    def path(self) -> str:
        """The library's path."""
        return self._path

    @property
    def assembly(self) -> None:
        """``None``: .NET assemblies are not supported."""
        return None

    @property
    def application(self) -> None:
        """``None``: ActiveX is not supported."""
        return None

    @staticmethod
    def version() -> str:
        """The version of the Python running the server (in the server: ``sys.version``; in the 64-bit
        package: the 32-bit Python a ``Client64`` would start, as found on this machine)."""
        if _IN_SERVER:
            return sys.version
        from ._client64 import find_python32

        return find_python32(None).version

    @staticmethod
    def is_interpreter() -> bool:
        """Whether this code runs in bitbridge's Python server."""
        return _IN_SERVER

    @staticmethod
    def remove_site_packages_64bit() -> str:
        """Removes the (64-bit) ``site-packages`` folder the client passed into ``sys.path``; returns it
        (an empty string if there was none)."""
        for i, p in enumerate(sys.path):
            if p.endswith("site-packages"):
                return sys.path.pop(i)
        return ""

    def shutdown_handler(self) -> None:
        """Called before the server shuts down: override it to close what the object opened."""


def _load_module(module32: str) -> Any:
    """Imports ``module32``: a module name, or the path of a ``.py`` file (its folder joins sys.path)."""
    if module32.endswith(".py") or os.sep in module32:
        p = module32 if module32.endswith(".py") else module32 + ".py"
        if not os.path.isfile(p):
            raise ModuleNotFoundError(f"no module file {p!r}")
        sys.path.insert(0, os.path.dirname(os.path.abspath(p)))
        module32 = os.path.splitext(os.path.basename(p))[0]
    return importlib.import_module(module32)


def _find_class(module: Any) -> type:
    """The ``Server32`` subclass the module defines (msl-loadlib: the first one found)."""
    for name in dir(module):
        obj = getattr(module, name)
        if (
            isinstance(obj, type)
            and issubclass(obj, Server32)
            and obj is not Server32
            and obj.__module__ == module.__name__
        ):
            return obj
    raise AttributeError(
        f"module {module.__name__!r} ({getattr(module, '__file__', '?')}) defines no subclass of Server32"
    )


def _construct(options: dict) -> Any:
    """Imports ``options["module32"]`` with the ``sys.path`` and ``PATH`` additions and constructs its
    ``Server32`` subclass with ``host``, ``port`` and the keyword arguments: the server's start, and
    msl-loadlib's mock mode in the client."""
    for p in options.get("sys_path", []):
        if p not in sys.path:
            sys.path.append(p)
    extra = [p for p in options.get("environ_path", []) if p]
    if extra:
        os.environ["PATH"] = os.pathsep.join([os.environ.get("PATH", ""), *extra])
    module = _load_module(options["module32"])
    cls = _find_class(module)
    return cls(options.get("host"), options.get("port"), **options.get("kwargs", {}))


def _start(options: dict) -> Any:
    """In the Python server: import the module and construct its ``Server32`` subclass (raises what
    the module or its constructor raise, which the client reports with the traceback)."""
    global _IN_SERVER
    _IN_SERVER = True
    sys.modules["bitbridge"] = sys.modules[__name__]
    return _construct(options)
