"""Libraries and their functions: ``CDLL``, the foreign functions it gives, pointers into a server."""

from __future__ import annotations

import ctypes as _ct
import os
import threading
from pathlib import Path
from typing import Any

from . import _native, _types
from ._errors import ArgumentError, SignatureError, SymbolNotFound
from ._types import CFuncPtr, ctype_of, storage, view_class, warn_ambiguous

_state = threading.local()


def get_errno() -> int:
    """ctypes' ``get_errno``: the ``errno`` captured after the last call, on this thread, of a function
    loaded with ``use_errno=True``."""
    return getattr(_state, "errno", 0)


def set_errno(value: int) -> int:
    """ctypes' ``set_errno``: sets this thread's captured ``errno`` and returns the old value. (The
    server sets ``errno`` to 0 before each call of a ``use_errno`` function.)"""
    old = get_errno()
    _state.errno = value
    return old


def get_last_error() -> int:
    """ctypes' ``get_last_error``: the Windows ``GetLastError()`` captured after the last call, on this
    thread, of a function of a Windows DLL loaded with ``use_last_error=True``."""
    return getattr(_state, "last_error", 0)


def set_last_error(value: int) -> int:
    """ctypes' ``set_last_error``: sets this thread's captured last-error code and returns the old
    value. (The server calls ``SetLastError(0)`` before each call of a ``use_last_error`` function.)"""
    old = get_last_error()
    _state.last_error = value
    return old


def _packaged_servers() -> str | None:
    d = Path(__file__).with_name("_servers")
    return str(d) if d.is_dir() else None


# The servers shipped in the wheel serve every Server and CDLL unless an option or a
# BITBRIDGE_SERVER_* variable names another.
_native.set_default_server_dir(_packaged_servers())


class ServerAddress(int):
    """An address in a server's memory, as a ``c_void_p`` result gives it: an ``int`` (pass it back,
    compare it, print it) that remembers its server, so ``bitbridge.ctypes.cast(addr, POINTER(T))``
    gives a ``RemotePointer`` and ``string_at(addr)`` reads the server's memory. Dereferencing it as
    a pointer of *this* process (plain ``ctypes.cast``) would read memory that is not there."""

    _bb_server_: Any

    def __new__(cls, value: int, server: Any) -> ServerAddress:
        obj = super().__new__(cls, value)
        obj._bb_server_ = server
        return obj

    @property
    def _bb_address_(self) -> int:
        return int(self)

    def __repr__(self) -> str:
        return f"ServerAddress({int(self):#x})"


class RemotePointer:
    """A pointer into the server's memory, as a function returning ``POINTER(T)`` gives it.

    ``p.value`` (or ``int(p)``) is the server's address; ``p[i]`` reads element ``i`` from the server
    (one round trip) and ``p[i] = v`` writes it; ``p.contents`` is ``p[0]`` as a ``T`` instance. Pass
    it back to the library as any pointer argument. It is falsy when NULL.
    """

    __slots__ = ("_bb_address_", "_server", "_type_")

    def __init__(self, server: Any, address: int, type_: Any) -> None:
        self._server = server
        self._bb_address_ = int(address)  # a plain int, even from a ServerAddress
        self._type_ = type_

    @property
    def value(self) -> int:
        return self._bb_address_

    def __int__(self) -> int:
        return self._bb_address_

    __index__ = __int__

    def __bool__(self) -> bool:
        return self._bb_address_ != 0

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RemotePointer):
            return other._bb_address_ == self._bb_address_
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._bb_address_)

    def _element(self) -> tuple[Any, int]:
        if self._type_ is None:
            raise TypeError("a void * has no elements: cast it first (bitbridge.ctypes.cast(p, POINTER(T)))")
        ct = ctype_of(self._type_)
        return ct, ct.size(self._server.target)

    def __getitem__(self, i: int) -> Any:
        if not self:
            raise ValueError("NULL pointer access")
        ct, size = self._element()
        v = self._server.read_value(self._bb_address_ + i * size, ct)
        if isinstance(v, bytes) and ct.kind in ("struct", "union", "array"):
            return storage(self._type_).from_buffer_copy(v)
        return v

    def __setitem__(self, i: int, value: Any) -> None:
        if not self:
            raise ValueError("NULL pointer access")
        ct, size = self._element()
        self._server.write(self._bb_address_ + i * size, _encode_for(ct, value, self._server.target))

    @property
    def contents(self) -> Any:
        v = self[0]
        t = storage(self._type_)
        return v if isinstance(v, (_ct.Structure, _ct.Union, _ct.Array)) else t(v)

    def __repr__(self) -> str:
        name = getattr(self._type_, "__name__", "void")
        return f"<bitbridge pointer to {name} at {self._bb_address_:#x} in the {self._server.target} server>"


def _encode_for(ct: Any, value: Any, target: str) -> bytes:
    """``value`` laid out as ``ct`` for ``target``, through a ctypes view of that layout."""
    cls = view_class(ct, target)
    if isinstance(value, (_ct.Structure, _ct.Union, _ct.Array)):
        if ct.size("host") == ct.size(target) and not ct.contains_pointer():
            return bytes(memoryview(value).cast("B"))
        raise TypeError(f"write the members of a `{ct}` one by one on a {target} server")
    if isinstance(value, _ct._SimpleCData):
        value = value.value
    return bytes(memoryview(cls(value)).cast("B"))


_MISSING = object()


class FuncPtr:
    """A function of a library in a server, configured the ctypes way.

    Set ``argtypes`` (a list of ctypes classes) and ``restype`` (a ctypes class, ``None`` for
    ``void``, or a callable applied to an ``int`` result), optionally ``errcheck``, then call it with
    Python values or ctypes objects. Pointer arguments are copied to the server and back (ctypes has
    no directions; give ``paramflags`` or declare the function in C with ``const`` to copy less).
    Calls with more arguments than ``argtypes`` are variadic calls: the extra arguments are typed from
    their values (``int`` is ``int``, ``float`` is ``double``, ``bytes`` is ``char *``, ctypes
    instances their own type).
    """

    def __init__(self, name: str, lib: CDLL, paramflags: Any = None, native: Any = None) -> None:
        self.__name__ = name
        self._lib = lib
        self._argtypes: list | None = None
        self._argtypes_given: Any = None
        self._restype: Any = _ct.c_int
        self._errcheck: Any = None
        self._paramflags = tuple(paramflags) if paramflags else None
        self._prepared: dict = {}
        self._fast: Any = None
        self._nargs = -1
        self._native_from_c = native
        self._missing: Exception | None = None
        if native is None:
            try:
                self._address = lib._lib.symbol(name)  # SymbolNotFound (an AttributeError) as ctypes raises
            except SymbolNotFound as e:
                # A 32-bit DLL exports `add_std` as `add_std@8`: the decoration depends on the argument
                # types, so the server finds it when the function is prepared (at the first call).
                if lib._lib.server.target != "win32":
                    raise
                self._address, self._missing = 0, e
        else:
            self._address = native.address
            self._restype = None  # the declaration says: results take the declared type's shape
            if native.restype.kind in ("scalar", "void", "cstr", "wstr"):
                self._fast = native
                self._nargs = len(native.params)

    # The ctypes attributes; changing one drops what was prepared.
    @property
    def argtypes(self) -> Any:
        """The sequence given (as ctypes keeps it); assign a new one to change the signature."""
        return self._argtypes_given

    @argtypes.setter
    def argtypes(self, value: Any) -> None:
        self._argtypes_given = value
        self._argtypes = list(value) if value is not None else None
        self._reset()

    @property
    def restype(self) -> Any:
        return self._restype

    @restype.setter
    def restype(self, value: Any) -> None:
        self._restype = value
        self._reset()

    @property
    def errcheck(self) -> Any:
        return self._errcheck

    @errcheck.setter
    def errcheck(self, value: Any) -> None:
        if value is not None and not callable(value):
            raise TypeError("errcheck must be callable")
        self._errcheck = value
        self._reset()

    @property
    def _bb_address_(self) -> int:
        if self._missing is not None:
            raise SymbolNotFound(
                f"{self._missing} (a decorated 32-bit export is found once argtypes are set and it is called)"
            )
        return self._address

    def _reset(self) -> None:
        self._native_from_c = None
        self._prepared.clear()
        self._fast = None
        self._nargs = -1

    def _restype_ctype(self, ambiguous: list | None = None) -> tuple[Any, Any]:
        """The C return type (aliased plain ctypes classes recorded in ``ambiguous``), and the class
        that results are made into."""
        r = self._restype
        if r is None:
            return _types.CType.scalar("void"), None
        if isinstance(r, type):
            return ctype_of(r, ambiguous), r
        if callable(r):  # ctypes: a callable restype gets the int result
            return _types.CType.scalar("int"), r
        raise SignatureError(f"restype of `{self.__name__}` must be a ctypes type, None or a callable")

    def _directions(self, argtypes: list) -> list[str]:
        dirs = [_types.param_direction(t) for t in argtypes]
        if self._paramflags:
            for i, pf in enumerate(self._paramflags):
                flag = pf[0] & 3
                if i < len(dirs) and dirs[i] != "in":
                    dirs[i] = {1: "in", 2: "out", 3: "inout", 0: "inout"}[flag]
        return dirs

    def _prepare(self, argtypes: list, extra: int = 0) -> Any:
        """The native function for these parameter classes (and ``extra`` variadic arguments)."""
        key = (tuple(argtypes), extra > 0)
        f = self._prepared.get(key)
        if f is not None:
            return f
        amb: list = []
        params = []
        for i, (t, d) in enumerate(zip(argtypes, self._directions(argtypes), strict=True)):
            try:
                params.append((_types.param_ctype(t, amb), d))
            except SignatureError as e:
                raise SignatureError(f"argument {i + 1} of `{self.__name__}`: {e}") from None
        ret, _ = self._restype_ctype(amb)
        if ret.kind in ("struct", "union") and ret.contains_pointer():
            raise SignatureError(
                f"`{self.__name__}` returns `{ret}` by value, whose pointer members would be server addresses "
                "in a ctypes object of this process: return it through a pointer (restype POINTER(T)) and "
                "read it with the RemotePointer"
            )
        lib = self._lib
        warn_ambiguous(amb, lib._lib.server.target, f"`{self.__name__}`")
        conv = "stdcall" if lib._stdcall else "cdecl"
        f = lib._lib.function(
            self.__name__, ret, params, conv, lib._use_errno, extra > 0, use_last_error=lib._use_last_error
        )
        if self._missing is not None:  # found under its decorated name
            self._address, self._missing = f.address, None
        self._prepared[key] = f
        return f

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        fast = self._fast
        if fast is not None and len(args) == self._nargs and not kwargs:
            return fast(*args)
        return self._call(args, kwargs)

    def _call(self, args: tuple, kwargs: dict) -> Any:
        outs: list[int] = []
        if self._paramflags:
            args, outs = self._apply_paramflags(args, kwargs)
        elif kwargs:
            raise TypeError(f"`{self.__name__}` takes no keyword arguments (give paramflags to name them)")
        native = self._native_from_c
        if native is not None:
            result = native(*args)
            return self._finish(result, native.restype, args, outs)
        argtypes = self._argtypes
        extra: list = []
        if argtypes is None:
            argtypes = [_infer(a) for a in args]
        elif len(args) > len(argtypes):
            extra = [(ctype_of(_infer(a, variadic=True)), a) for a in args[len(argtypes) :]]
            args = args[: len(argtypes)]
        elif len(args) < len(argtypes):
            raise ArgumentError(f"`{self.__name__}` takes {len(argtypes)} arguments ({len(args)} given)")
        f = self._prepare(argtypes, len(extra))
        lib = self._lib
        simple = (
            not extra
            and not lib._use_errno
            and not lib._use_last_error
            and not outs
            and self._errcheck is None
        )
        if simple and self._argtypes is not None and _plain_result(self._restype):
            self._fast, self._nargs = f, len(argtypes)
            return f(*args)
        result, errno, last_error = f.call(args, extra or None)
        if errno is not None:
            _state.errno = errno
        if last_error is not None:
            _state.last_error = last_error
        return self._finish(result, f.restype, args, outs)

    def _finish(self, result: Any, ret: Any, args: tuple, outs: list[int]) -> Any:
        result = _make_result(result, ret, self._restype, self._lib)
        if self._errcheck is not None:
            checked = self._errcheck(result, self, args)
            # ctypes: with output parameters, errcheck returning the arguments means "return the
            # outputs"; anything else is the result.
            if not outs or checked is not args:
                return checked
        if outs:
            vals = [_out_value(args[i]) for i in outs]
            return vals[0] if len(vals) == 1 else tuple(vals)
        return result

    def _apply_paramflags(self, args: tuple, kwargs: dict) -> tuple[tuple, list[int]]:
        """ctypes' paramflags: 1 in, 2 out (made here and returned), 4 in with a default of 0."""
        argtypes = self._argtypes or []
        paramflags = self._paramflags or ()
        if len(paramflags) != len(argtypes):
            raise ValueError(f"`{self.__name__}`: paramflags must have one entry per argtype")
        full, outs, it = [], [], iter(args)
        for i, (pf, t) in enumerate(zip(paramflags, argtypes, strict=True)):
            flag = pf[0]
            name = pf[1] if len(pf) > 1 else None
            if flag & 2 and not flag & 1:
                obj = storage(t._type_)() if _types._is_pointer_class(t) else storage(t)()
                full.append(obj)
                outs.append(i)
                continue
            if name is not None and name in kwargs:
                positional = next(it, _MISSING)
                if positional is not _MISSING:
                    raise TypeError(f"`{self.__name__}`: argument {name!r} given by position and by keyword")
                full.append(kwargs.pop(name))
                continue
            try:
                full.append(next(it))
            except StopIteration:
                if len(pf) > 2:
                    full.append(pf[2])
                elif flag & 4:
                    full.append(0)
                else:
                    raise TypeError(
                        f"`{self.__name__}`: required argument {name or i + 1!r} missing"
                    ) from None
            if flag & 2:
                outs.append(i)
        if kwargs:
            raise TypeError(f"`{self.__name__}`: unknown keyword arguments {sorted(kwargs)}")
        rest = list(it)
        if rest:
            raise TypeError(f"`{self.__name__}`: {len(rest)} arguments too many")
        return tuple(full), outs

    def __repr__(self) -> str:
        return f"<bitbridge function {self.__name__} of {self._lib._name}>"


def _plain_result(restype: Any) -> bool:
    """Whether the native call's result is already what ctypes returns for ``restype``."""
    if restype is None:
        return True
    if not isinstance(restype, type):
        return False
    if issubclass(restype, (_ct.Structure, _ct.Union, _types._POINTER_BASE)) or restype is _ct.c_void_p:
        return False
    return issubclass(restype, _types._SIMPLE_BASE)


def _make_result(result: Any, ret: Any, restype: Any, lib: CDLL) -> Any:
    kind = ret.kind
    if kind in ("struct", "union"):
        cls = restype if isinstance(restype, type) else view_class(ret, "host")
        return storage(cls).from_buffer_copy(result)
    if kind == "pointer":
        if ret.name == "void *":
            return ServerAddress(result, lib._lib.server) if result else None
        pointee = (
            restype._type_
            if isinstance(restype, type) and hasattr(restype, "_type_")
            else _class_for(ret.element)
        )
        return RemotePointer(lib._lib.server, result, pointee)
    if restype is not None and not isinstance(restype, type) and callable(restype):
        return restype(result)
    return result


def _class_for(ct: Any) -> Any:
    return None if ct.kind == "void" else view_class(ct, "host")


def _out_value(obj: Any) -> Any:
    """What ctypes returns for an output parameter: the value of a simple type, else the object."""
    if isinstance(obj, _ct._SimpleCData):
        return obj.value
    return obj


def _infer(a: Any, variadic: bool = False) -> Any:
    """The ctypes class ctypes' default conversions give an argument without argtypes."""
    if isinstance(a, bool):
        return _ct.c_int
    if isinstance(a, int):
        return _ct.c_int
    if isinstance(a, float):
        return _ct.c_double
    if isinstance(a, bytes):
        return _ct.c_char_p
    if isinstance(a, str):
        return _ct.c_wchar_p
    if a is None:
        return _ct.c_void_p
    if isinstance(a, RemotePointer):
        return _ct.c_void_p
    if isinstance(a, CFuncPtr):
        return type(a)
    if isinstance(a, _ct.Array):
        return _types.POINTER(a._type_)
    if isinstance(a, _ct._SimpleCData | _ct.Structure | _ct.Union | _types._POINTER_BASE):
        t = type(a)
        if variadic and t in (_ct.c_float,):
            raise ArgumentError("a float among variadic arguments is passed as a double in C: pass c_double")
        return t
    if type(a).__name__ == "CArgObject":
        return _types.POINTER(type(a._obj))
    raise ArgumentError(f"don't know how to convert {type(a).__name__}: set argtypes")


class CDLL:
    """A library loaded in a bitbridge server of its own architecture (ctypes' ``CDLL``).

    ``name`` is a path, or a bare name (``"libm.so.6"``) looked up for ``arch`` (``"i686"`` or
    ``"x86_64"``; the default is this process's). A Windows DLL (a PE file, or a bare name ending in
    ``.dll`` such as ``"kernel32.dll"``, for ``arch`` or x86_64) is hosted by bitbridge's Windows server
    under Wine. ``use_errno=True`` captures ``errno`` after each call (``get_errno()``);
    ``use_last_error=True`` captures ``GetLastError()`` (``get_last_error()``; Windows DLLs only: on a
    Linux library the first call raises ``SignatureError``). Server options (keywords):
    ``call_timeout`` and ``startup_timeout`` (seconds), ``library_dirs`` (folders of the library's own
    dependencies), ``env`` (a dict), ``concurrent`` (server threads), ``restart_on_failure``,
    ``shared_memory`` (False: the socket), ``spin`` (seconds), ``server_path``/``server_dir``, ``wine``
    (the Wine loader) and ``wine_prefix`` (a folder) for Windows DLLs. ``mode``, ``handle`` and
    ``winmode`` are accepted for compatibility and ignored.

    Raises ``LibraryNotFound``, ``NotALibrary``, ``UnsupportedArchitecture``, ``LoadError`` (an
    ``OSError``, as ctypes raises), ``ServerNotFound``.
    """

    _stdcall = False

    def __init__(
        self,
        name: str | os.PathLike,
        mode: int = 0,
        handle: Any = None,
        use_errno: bool = False,
        use_last_error: bool = False,
        winmode: Any = None,
        *,
        arch: str | None = None,
        server: Any = None,
        **options: Any,
    ) -> None:
        self._name = os.fspath(name)
        self._use_errno = use_errno
        self._use_last_error = use_last_error
        if server is not None:
            self._lib = server.load(self._name)
        else:
            self._lib = _native.Library.open(self._name, arch, **options)
        self._handle = self._lib

    @property
    def server(self) -> Any:
        """The server hosting the library (memory, more libraries, ``shutdown()``)."""
        return self._lib.server

    def __getattr__(self, name: str) -> FuncPtr:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        f = self[name]
        setattr(self, name, f)
        return f

    def __getitem__(self, name: str) -> FuncPtr:
        if not isinstance(name, str):
            raise TypeError("functions are looked up by name (ordinals are a Windows feature)")
        return FuncPtr(name, self)

    def function(self, prototype: str) -> FuncPtr:
        """A function from its C prototype, e.g. ``lib.function("double sum(const double *a, int n)")``:
        pointers to ``const`` are only copied in, others copied in and back. Raises
        ``DeclarationError`` with the column."""
        native = self._lib.function_from_c(prototype)
        return FuncPtr(native.name, self, native=native)

    def declare(self, header: str, defines: dict | None = None) -> Header:
        """Every function, type and constant of a C header's text (or of a ``.h`` file's path)."""
        text = header
        if "\n" not in header and header.endswith(".h") and os.path.exists(header):
            text = Path(header).read_text()
        decls = _native.Declarations(text, list((defines or {}).items()))
        return Header(self, decls)

    def __repr__(self) -> str:
        return f"<bitbridge.CDLL {self._name!r} in the {self._lib.server.target} server (pid {self._lib.server.pid})>"


class Header:
    """The declarations of a C header, bound to a library: ``h.sum(...)`` calls the declared
    function, ``h.types["struct Point"]`` is a ctypes class laid out like it on this host,
    ``h.constants`` the ``#define`` and enum constants."""

    def __init__(self, lib: CDLL, decls: Any) -> None:
        self._lib = lib
        self._decls = decls
        self.constants: dict = decls.constants()
        self.functions: list[str] = decls.functions()

    def __getattr__(self, name: str) -> FuncPtr:
        if name.startswith("_"):
            raise AttributeError(name)
        native = self._lib._lib.declare(self._decls, name)
        f = FuncPtr(native.name, self._lib, native=native)
        setattr(self, name, f)
        return f

    def type(self, name: str) -> type:
        """A ctypes class with the layout of the declared type ``name`` on this host."""
        ct = self._decls.type_named(name)
        if ct is None:
            raise KeyError(name)
        return view_class(ct, "host")

    @property
    def types(self) -> _TypeLookup:
        return _TypeLookup(self)


class _TypeLookup:
    def __init__(self, h: Header) -> None:
        self._h = h

    def __getitem__(self, name: str) -> type:
        return self._h.type(name)


class WinDLL(CDLL):
    """A library whose functions use ``__stdcall`` (ctypes' ``WinDLL``): Windows DLLs, whose 32-bit
    exports are mostly ``WINAPI``; on x86_64 the convention is the one of every function, as for
    ``CDLL``."""

    _stdcall = True


class LibraryLoader:
    """ctypes' ``LibraryLoader``: ``cdll.LoadLibrary(name)`` and ``cdll.libname``."""

    def __init__(self, dlltype: type) -> None:
        self._dlltype = dlltype

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        # `windll.kernel32`: Windows' LoadLibrary adds the `.dll` a bare name lacks, and the name ending
        # in `.dll` is what sends it to a Windows server.
        dll = self._dlltype(name + ".dll" if self._dlltype is WinDLL and "." not in name else name)
        setattr(self, name, dll)
        return dll

    def __getitem__(self, name: str) -> Any:
        return getattr(self, name)

    def LoadLibrary(self, name: str, **options: Any) -> Any:  # noqa: N802 - ctypes' name
        return self._dlltype(name, **options)


cdll = LibraryLoader(CDLL)
windll = LibraryLoader(WinDLL)
"""``windll.kernel32``: a Windows system DLL by name, in an x86_64 Windows server (under Wine);
``windll.LoadLibrary("kernel32.dll", arch="i686")`` for the 32-bit one."""
