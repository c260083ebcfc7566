"""bitbridge: call a native library that cannot be loaded into this process, ctypes-style.

The classic case is a 32-bit ``.so`` from 64-bit Python: ``bitbridge.CDLL("./lib32.so")`` starts a
32-bit bitbridge server (shipped in this package), loads the library there and forwards each call over
shared memory. ``from bitbridge import ctypes`` is a drop-in for the ``ctypes`` module;
``bitbridge.sharedctypes`` is ``multiprocessing.sharedctypes`` across 32- and 64-bit processes.
"""

from __future__ import annotations

from . import _native
from ._client64 import Client64
from ._errors import *  # noqa: F403 - the exception classes
from ._errors import __all__ as _errors_all
from ._library import (
    CDLL,
    FuncPtr,
    Header,
    RemotePointer,
    ServerAddress,
    WinDLL,
    cdll,
    get_errno,
    get_last_error,
    set_errno,
    set_last_error,
    windll,
)
from ._server32 import Server32

Server = _native.Server
CType = _native.CType
__version__ = _native.version()

__all__ = [
    "CDLL",
    "CType",
    "Client64",
    "Server32",
    "FuncPtr",
    "Header",
    "RemotePointer",
    "ServerAddress",
    "Server",
    "WinDLL",
    "cdll",
    "get_errno",
    "get_last_error",
    "set_errno",
    "set_last_error",
    "windll",
    *_errors_all,
]
