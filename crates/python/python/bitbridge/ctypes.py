"""A drop-in for ``ctypes`` whose libraries run in a bitbridge server: ``from bitbridge import ctypes``.

Everything ``ctypes`` has is here. What differs:

- ``CDLL``/``WinDLL``/``cdll`` load the library into a server of *its* architecture (a 32-bit ``.so``
  from 64-bit Python), and take server options (``call_timeout=...``, ``arch="i686"`` for a bare name).
- Distinct classes for the C types ctypes aliases on 64-bit Linux: ``c_long``, ``c_ulong``,
  ``c_longlong``, ``c_ulonglong``, ``c_int64``, ``c_uint64``, ``c_size_t``, ``c_ssize_t``. With them a
  declaration means the same on every server (``c_long`` is 4 bytes on i686). The plain ctypes classes
  are accepted too; where one is ambiguous for the server a ``bitbridge.AmbiguousTypeWarning`` says how
  it was read and what to use.
- ``Structure``/``Union`` are laid out for the server's target when they cross (i386 aligns ``double``
  to 4); ``sizeof(x)`` is this process's size, ``sizeof(x, target="i686")`` the server's.
- ``POINTER``/``CFUNCTYPE``/``WINFUNCTYPE`` know the distinct classes; a callback runs in this process
  when the library calls it.
- Functions returning pointers give a ``RemotePointer`` into the server (``p[0]`` reads there).
- What cannot cross between processes is an error: an address of this process (``addressof``,
  ``c_void_p(addressof(x))``), a plain ctypes function pointer, bit-fields.
"""

# A drop-in re-exports ctypes and then redefines part of it on purpose (CDLL, POINTER, sizeof, ...):
# mypy's checks against ctypes' own stubs for those names do not apply here.
# mypy: disable-error-code="assignment,misc,no-redef,type-var"
from __future__ import annotations

import ctypes as _ct
from ctypes import *  # noqa: F401,F403 - the drop-in: everything ctypes has, overridden below where it differs
from typing import Any

# The names this module redefines: imported after `from ctypes import *` so that they win. (Listed in
# __all__ below, so linters keep them.)
from ._library import (
    CDLL,
    LibraryLoader,
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
from ._types import (
    CFUNCTYPE,
    POINTER,
    WINFUNCTYPE,
    CFuncPtr,
    Structure,
    Union,
    c_int64,
    c_long,
    c_longlong,
    c_size_t,
    c_ssize_t,
    c_uint64,
    c_ulong,
    c_ulonglong,
    ctype_of,
)

ArgumentError = __import__("bitbridge._errors", fromlist=["ArgumentError"]).ArgumentError
PyDLL = CDLL
pydll = cdll


def sizeof(obj_or_type: Any, target: str | None = None) -> int:
    """``sizeof`` in this process (as ctypes), or on ``target`` (``"i686"``, ``"x86_64"``, ``"win32"``,
    ``"win64"``) when given."""
    if target is None:
        return _ct.sizeof(obj_or_type)
    t = obj_or_type if isinstance(obj_or_type, type) else type(obj_or_type)
    return ctype_of(t).size(target)


def alignment(obj_or_type: Any, target: str | None = None) -> int:
    """``alignment`` in this process, or on ``target``."""
    if target is None:
        return _ct.alignment(obj_or_type)
    t = obj_or_type if isinstance(obj_or_type, type) else type(obj_or_type)
    return ctype_of(t).align(target)


class HostAddress(int):
    """An address in *this* process (from ``addressof``): usable with ctypes here, refused as an
    argument to a server, where it would point at nothing."""

    _bb_host_address_ = True


def addressof(obj: Any) -> HostAddress:
    """ctypes' ``addressof``: an address in this process, which a server cannot use."""
    return HostAddress(_ct.addressof(obj))


def cast(obj: Any, typ: Any) -> Any:
    """ctypes' ``cast``. A ``RemotePointer`` or ``ServerAddress`` (from the server) becomes a pointer into
    the server: a ``RemotePointer`` for ``POINTER(T)``, a ``ServerAddress`` for ``c_void_p``, the string
    for ``c_char_p``. ctypes objects of this process are cast as ctypes does."""
    server = obj._server if isinstance(obj, RemotePointer) else getattr(obj, "_bb_server_", None)
    if server is not None:
        address = int(obj)
        if typ is _ct.c_void_p:
            return ServerAddress(address, server)
        if typ is _ct.c_char_p:
            return server.read_cstring(address) if address else None
        if getattr(typ, "_type_", None) is None or not issubclass(typ, _ct._Pointer):
            raise TypeError(
                f"cast of a server address to {getattr(typ, '__name__', typ)}: use POINTER(T), c_void_p or c_char_p"
            )
        return RemotePointer(server, address, typ._type_)
    return _ct.cast(obj, typ)


def string_at(address: Any, size: int = -1) -> bytes:
    """ctypes' ``string_at``; for a ``ServerAddress`` or ``RemotePointer``, read in the server."""
    server = address._server if isinstance(address, RemotePointer) else getattr(address, "_bb_server_", None)
    if server is None:
        return _ct.string_at(address, size)
    return server.read_cstring(int(address)) if size < 0 else server.read(int(address), size)


def LoadLibrary(name: str, **options: Any) -> CDLL:  # noqa: N802 - ctypes' name
    """Opens ``name`` in a server (``CDLL(name, **options)``)."""
    return CDLL(name, **options)


_OURS = [
    "CDLL",
    "CFUNCTYPE",
    "CFuncPtr",
    "HostAddress",
    "LibraryLoader",
    "POINTER",
    "RemotePointer",
    "Structure",
    "Union",
    "WINFUNCTYPE",
    "WinDLL",
    "addressof",
    "alignment",
    "c_int64",
    "c_long",
    "c_longlong",
    "c_size_t",
    "c_ssize_t",
    "c_uint64",
    "c_ulong",
    "c_ulonglong",
    "cast",
    "string_at",
    "ServerAddress",
    "cdll",
    "ctype_of",
    "get_errno",
    "get_last_error",
    "set_errno",
    "set_last_error",
    "windll",
    "sizeof",
]
__all__ = sorted({n for n in dir(_ct) if not n.startswith("_")} | set(_OURS))
