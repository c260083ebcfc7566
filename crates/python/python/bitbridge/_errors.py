"""bitbridge's exceptions: one base class, ``bitbridge.Error``, and a class per failure.

Each mirrors a variant of the Rust crate's ``bitbridge::Error`` and, where ctypes raises a builtin
exception in the same situation, derives from it too, so code written for ctypes keeps working:
``LoadError`` is an ``OSError`` (ctypes: ``OSError`` from ``CDLL``), ``SymbolNotFound`` an
``AttributeError`` (ctypes: ``AttributeError`` for a missing function), ``ArgumentError`` a
``ctypes.ArgumentError`` and a ``TypeError``, ``Timeout`` a ``TimeoutError``.
"""

from __future__ import annotations

import ctypes as _ctypes


class Error(Exception):
    """Base class of every bitbridge error."""


class LibraryNotFound(Error, FileNotFoundError):
    """The library file does not exist or cannot be read. Attribute: ``path``."""

    path: str | None = None


class NotALibrary(Error, OSError):
    """The file is not a shared library (Debian's ``libm.so`` is a linker script: use ``libm.so.6``)."""

    path: str | None = None


class UnsupportedArchitecture(Error, OSError):
    """The library is for a processor or system bitbridge cannot host here."""

    path: str | None = None


class ServerNotFound(Error, FileNotFoundError):
    """No ``bitbridge-server`` for the library's architecture was found. Attribute: ``arch``."""

    arch: str | None = None


class LoadError(Error, OSError):
    """The server's dynamic loader refused the library. Attributes: ``path``, ``missing`` (the
    dependencies not found on the library search path)."""

    path: str | None = None
    missing: list[str] | None = None


class UntrustedServer(Error, PermissionError):
    """A server program that others could have changed (writable by group or others, or owned by
    another user) was refused. Attribute: ``path``."""

    path: str | None = None


class SharedObjectError(Error, OSError):
    """A shared object could not be created or opened (it does not exist, it already exists, it is
    not a bitbridge object). Attribute: ``object``."""

    object: str | None = None


class LoadTimeout(Error, TimeoutError):
    """Loading the library (its initialisers) took longer than ``load_timeout``; the server was killed.
    Attributes: ``path``, ``pid``."""

    path: str | None = None
    pid: int | None = None


class DuplicateSystemLibrary(LoadError):
    """A path to a second copy of a system library the server already runs on (a ``libc.so.6`` from
    another folder): open it by name instead. Attributes: ``path``, ``loaded``."""

    loaded: str | None = None


class SpawnError(Error, OSError):
    """The server program could not be started."""


class HandshakeError(Error):
    """The server program is not a bitbridge server of this version."""


class ProtocolError(Error):
    """The server sent something malformed."""


class ServerDied(Error):
    """The library crashed or exited during a request.

    Attributes: ``pid``; ``exit_code`` (or ``None``); ``signal`` (e.g. 11 for SIGSEGV, or ``None``);
    ``stderr``, the end of what the server printed on its standard error.
    """

    pid: int | None = None
    exit_code: int | None = None
    signal: int | None = None
    stderr: str = ""


class Timeout(Error, TimeoutError):
    """A call ran longer than its ``call_timeout``; the server was killed. Attribute: ``pid``."""

    pid: int | None = None


class StartupTimeout(Error, TimeoutError):
    """The server did not start within ``startup_timeout``; it was killed."""

    pid: int | None = None


class MessageTooLarge(Error, ValueError):
    """A request above the frame limit (1 GiB); nothing was sent."""


class UnsupportedError(Error):
    """Something bitbridge does not do (the message says what)."""


class ForkedError(Error):
    """This process is a ``fork()`` of the one that started the server: the server (and the library's
    state in it) belongs to the parent. Open the library again in the child (``multiprocessing`` with
    the fork start method runs children this way). Attribute: ``pid`` (the parent's server)."""

    pid: int | None = None


class ShutDown(Error):
    """The server was shut down; open the library again."""


class SymbolNotFound(Error, AttributeError):
    """The library does not export the name. Attribute: ``symbol``."""

    symbol: str | None = None


class DeclarationError(Error, ValueError):
    """C text that cannot be declared. Attributes: ``origin``, ``line``, ``column`` (from 1)."""

    origin: str | None = None
    line: int | None = None
    column: int | None = None


class NotDeclared(Error, AttributeError):
    """A function the declarations do not have. Attribute: ``function``."""

    function: str | None = None


class SignatureError(Error, TypeError):
    """A signature that cannot be called (a ``void`` parameter, an array by value, a bit-field, ...)."""


class ArgumentError(Error, _ctypes.ArgumentError, TypeError):
    """A value does not fit its declared type; the message says which argument and where in it."""


class ResultError(Error):
    """A result could not be read back."""


class CallbackError(Error):
    """A Python callback raised during a call; the message holds its traceback."""


class ConnectionError(Error):  # noqa: A001 - mirrors the Rust variant `Io`
    """An I/O error talking to the server."""


class Server32Error(Error):
    """The ``Server32`` object raised (msl-loadlib's ``Server32Error``). Attributes: ``name`` (the
    exception's type name), ``value`` (its message) and ``traceback`` (the server-side traceback)."""

    name: str = ""
    value: str = ""
    traceback: str = ""


class ConnectionTimeoutError(Error, TimeoutError):
    """The 32-bit server did not start, or its module failed to import or construct (msl-loadlib's
    ``ConnectionTimeoutError``). Attribute: ``reason``, what the server said (a traceback, its stderr)."""

    reason: str = ""


class ResponseTimeoutError(Error, TimeoutError):
    """A ``request32`` took longer than ``rpc_timeout``; the server was killed (msl-loadlib's
    ``ResponseTimeoutError``)."""


class AmbiguousTypeWarning(UserWarning):
    """A plain ``ctypes`` class that names several C types on this host (``ctypes.c_long is
    ctypes.c_int64`` on 64-bit Linux) was used for a server whose sizes differ; the warning says how
    it was read and which ``bitbridge.ctypes`` class to use instead."""


__all__ = [
    "AmbiguousTypeWarning",
    "ArgumentError",
    "CallbackError",
    "ConnectionError",
    "DuplicateSystemLibrary",
    "ForkedError",
    "LoadTimeout",
    "SharedObjectError",
    "UntrustedServer",
    "ConnectionTimeoutError",
    "ResponseTimeoutError",
    "Server32Error",
    "DeclarationError",
    "Error",
    "HandshakeError",
    "LibraryNotFound",
    "LoadError",
    "MessageTooLarge",
    "NotALibrary",
    "NotDeclared",
    "ProtocolError",
    "ResultError",
    "ServerDied",
    "ServerNotFound",
    "ShutDown",
    "SignatureError",
    "SpawnError",
    "StartupTimeout",
    "SymbolNotFound",
    "Timeout",
    "UnsupportedArchitecture",
    "UnsupportedError",
]
