"""ctypes classes as bitbridge C types.

Every ctypes class a user declares with (``c_int``, ``POINTER(c_double)``, ``c_char * 20``, a
``Structure`` subclass, a ``CFUNCTYPE`` prototype) maps to a target-independent ``CType`` (the Rust
crate's type model), which the server lays out for *its* target. ctypes' own classes alias some C types
on 64-bit Linux (``c_long is c_longlong is c_int64``; ``c_ulong is c_size_t is c_uint64``), so this
module adds distinct classes for them (``bitbridge.ctypes.c_long`` is a C ``long``: 4 bytes on i686,
8 on x86_64), stored in the host's matching ctypes class so ctypes' own machinery keeps working.
"""

from __future__ import annotations

import ctypes as _ct
import warnings
import weakref
from typing import Any

from . import _native
from ._errors import AmbiguousTypeWarning, SignatureError

CType = _native.CType

# ---------------------------------------------------------------------------------------------------
# Distinct classes for the C types ctypes aliases on this host.


class _SimpleMeta(type(_ct.c_int)):  # type: ignore[misc]
    """Metaclass of the distinct simple types: ``T * n`` builds an array whose items are plain ints."""

    def __mul__(cls, n: int) -> type:
        return array_type(cls, n)

    __rmul__ = __mul__


def _distinct(name: str, storage: type, c_name: str) -> type:
    """A class for the C type ``c_name``, stored as the host's ctypes class ``storage``."""
    return _SimpleMeta(
        name,
        (storage,),
        {
            "__module__": "bitbridge.ctypes",
            "__doc__": f"C `{c_name}`: its size is the server's (stored here as ctypes.{storage.__name__}).",
            "_bb_ctype_": CType.scalar(c_name),
            "_bb_storage_": storage,
        },
    )


# ctypes.c_long etc. are these very classes on 64-bit Linux: the storage of each distinct class.
_I64, _U64 = _ct.c_int64, _ct.c_uint64
c_long = _distinct("c_long", _I64, "long")
c_ulong = _distinct("c_ulong", _U64, "unsigned long")
c_longlong = _distinct("c_longlong", _I64, "long long")
c_ulonglong = _distinct("c_ulonglong", _U64, "unsigned long long")
c_int64 = _distinct("c_int64", _I64, "int64_t")
c_uint64 = _distinct("c_uint64", _U64, "uint64_t")
c_size_t = _distinct("c_size_t", _U64, "size_t")
c_ssize_t = _distinct("c_ssize_t", _I64, "ssize_t")

# Plain ctypes classes with one meaning everywhere.
_FUNDAMENTAL: dict[type, str] = {
    _ct.c_bool: "bool",
    _ct.c_char: "char",
    _ct.c_byte: "signed char",
    _ct.c_ubyte: "unsigned char",
    _ct.c_wchar: "wchar_t",
    _ct.c_short: "short",
    _ct.c_ushort: "unsigned short",
    _ct.c_int: "int",
    _ct.c_uint: "unsigned int",
    _ct.c_float: "float",
    _ct.c_double: "double",
    _ct.c_longdouble: "long double",
    _ct.c_char_p: "char *",
    _ct.c_wchar_p: "wchar_t *",
    _ct.c_void_p: "void *",
}
# Plain ctypes classes that stand for several C types on this host: read as the fixed-width one, with a
# warning when the server's sizes differ.
_AMBIGUOUS: dict[type, tuple[str, str]] = {}
_alias: Any
for _alias, _fixed, _names in (
    (_ct.c_long, "int64_t", "c_long / c_longlong / c_int64 / c_ssize_t"),
    (_ct.c_ulong, "uint64_t", "c_ulong / c_ulonglong / c_uint64 / c_size_t"),
):
    if _ct.sizeof(_alias) == 8:
        _AMBIGUOUS[_alias] = (_fixed, _names)
    else:  # a host whose long is 4 bytes: c_long is then c_int32, unambiguous
        _FUNDAMENTAL[_alias] = "long" if _alias is _ct.c_long else "unsigned long"
for _alias, _name in ((_ct.c_longlong, "long long"), (_ct.c_ulonglong, "unsigned long long")):
    if _alias not in _AMBIGUOUS and _alias not in _FUNDAMENTAL:
        _FUNDAMENTAL[_alias] = _name

_SIMPLE_BASE = _ct.c_int.__mro__[1]  # ctypes._SimpleCData
_POINTER_BASE = _ct.POINTER(_ct.c_int).__mro__[1]  # ctypes._Pointer
_ARRAY_BASE = _ct.Array
_CFUNC_BASE = _ct.CFUNCTYPE(None).__mro__[1]  # ctypes._CFuncPtr


# ---------------------------------------------------------------------------------------------------
# Structures, unions, arrays and pointers of distinct types.


def storage(t: Any) -> Any:
    """The host ctypes class that holds values of ``t``."""
    return getattr(t, "_bb_storage_", t) if isinstance(t, type) else t


class _AggregateMixin:
    """Translates ``_fields_`` naming distinct classes into their storage (so members read as plain
    ints), remembering the declared types for the server's layout."""

    def __setattr__(cls, name: str, value: Any) -> None:
        if name == "_fields_":
            declared = list(value)
            super().__setattr__("_bb_fields_", declared)  # type: ignore[misc]
            _CACHE.pop(cls, None)
            value = [(f[0], storage(f[1]), *f[2:]) for f in declared]
        super().__setattr__(name, value)  # type: ignore[misc]


class _StructMeta(_AggregateMixin, type(_ct.Structure)):  # type: ignore[misc]
    pass


class _UnionMeta(_AggregateMixin, type(_ct.Union)):  # type: ignore[misc]
    pass


class Structure(_ct.Structure, metaclass=_StructMeta):
    """ctypes' ``Structure``, laid out for the server's target when passed to it. Members may use the
    distinct classes of ``bitbridge.ctypes`` (``c_long``, ``c_size_t``, ...) and still read as ints."""


class Union(_ct.Union, metaclass=_UnionMeta):
    """ctypes' ``Union``, laid out for the server's target when passed to it."""


_ARRAYS: dict[tuple[type, int], type] = {}
_POINTERS: dict[type, type] = {}


def array_type(t: type, n: int) -> type:
    """``t * n``: a ctypes array class of ``n`` ``t``; for a distinct class, stored as its storage."""
    key = (t, n)
    if key not in _ARRAYS:
        base = storage(t) * n
        _ARRAYS[key] = type(base)(
            f"{t.__name__}_Array_{n}", (base,), {"_bb_ctype_": CType.array(ctype_of(t), n)}
        )
    return _ARRAYS[key]


def POINTER(t: Any) -> type:  # noqa: N802 - ctypes' name
    """ctypes' ``POINTER``: the pointer class for ``t``. For a distinct class, a subclass of the
    pointer to its storage that remembers the C type."""
    if isinstance(t, type) and hasattr(t, "_bb_storage_"):
        if t not in _POINTERS:
            base = _ct.POINTER(t._bb_storage_)
            _POINTERS[t] = type(base)(f"LP_{t.__name__}", (base,), {"_bb_ctype_": CType.pointer(ctype_of(t))})
        return _POINTERS[t]
    return _ct.POINTER(t)


# ---------------------------------------------------------------------------------------------------
# Callbacks (CFUNCTYPE).

FUNCFLAG_CDECL = 0x1
FUNCFLAG_STDCALL = 0x0
FUNCFLAG_USE_ERRNO = 0x8
FUNCFLAG_USE_LASTERROR = 0x10


class CFuncPtr:
    """Base of the prototypes ``CFUNCTYPE`` makes. A prototype called with a Python callable gives a
    callback the library can call (it runs in this process, on the thread that made the call into the
    library); called with ``(name, library)`` (and optionally ``paramflags``) it gives that library's
    function with this signature."""

    _restype_: Any = _ct.c_int
    _argtypes_: tuple = ()
    _flags_: int = FUNCFLAG_CDECL
    _bb_ctype_: Any

    def __new__(cls, *args: Any) -> Any:
        if not args:  # ctypes: the prototype called without arguments is a NULL function pointer
            return super().__new__(cls)
        if len(args) in (1, 2) and isinstance(args[0], tuple):
            from ._library import FuncPtr

            name, lib = args[0]
            paramflags = args[1] if len(args) > 1 else None
            f = FuncPtr(name, lib, paramflags=paramflags)
            f.argtypes = list(cls._argtypes_)
            f.restype = cls._restype_
            return f
        if len(args) == 1 and callable(args[0]):
            return super().__new__(cls)
        raise TypeError(
            f"{cls.__name__}() takes a Python callable (a callback) or ((name, library), paramflags); "
            "an address of this process cannot be called in a server"
        )

    def __init__(self, func: Any = None) -> None:
        self._func = func
        self._registered: dict[int, Any] = {}

    def __call__(self, *args: Any) -> Any:
        """Calls the Python function directly."""
        if self._func is None:
            raise ValueError("NULL function pointer called")
        return self._func(*args)

    def __bool__(self) -> bool:
        return self._func is not None

    def _bb_callback_for_(self, server: Any) -> int:
        """Registers the callback with ``server`` (once) and returns its address there."""
        if self._func is None:
            return 0
        cb = self._registered.get(server.pid)
        if cb is None:
            cb = server.callback(ctype_of(type(self)), self._invoke)
            self._registered[server.pid] = cb
        return cb.address

    def _invoke(self, raw: list) -> tuple:
        cls = type(self)
        args, objs = [], []
        for t, v in zip(cls._argtypes_, raw, strict=False):
            obj = None
            if v is not None and isinstance(v, bytes) and _is_pointer_class(t):
                target = t._type_
                obj = storage(target).from_buffer_copy(v)
                v = _ct.pointer(obj)
            elif isinstance(v, bytes) and isinstance(t, type) and issubclass(t, (_ct.Structure, _ct.Union)):
                v = t.from_buffer_copy(v)
            args.append(v)
            objs.append(obj)
        result = self._func(*args)
        outs = [bytes(memoryview(o).cast("B")) if o is not None else None for o in objs]
        if isinstance(result, _SIMPLE_BASE):
            result = result.value  # type: ignore[attr-defined]
        return result, outs


def _is_pointer_class(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, _POINTER_BASE)


_PROTOTYPES: dict[tuple, type] = {}


def CFUNCTYPE(restype: Any, *argtypes: Any, use_errno: bool = False, use_last_error: bool = False) -> type:  # noqa: N802
    """ctypes' ``CFUNCTYPE``: a prototype for C functions of the cdecl convention."""
    flags = FUNCFLAG_CDECL | (FUNCFLAG_USE_ERRNO if use_errno else 0)
    return _prototype(restype, argtypes, flags, use_last_error)


def WINFUNCTYPE(restype: Any, *argtypes: Any, use_errno: bool = False, use_last_error: bool = False) -> type:  # noqa: N802
    """ctypes' ``WINFUNCTYPE``: a prototype for ``__stdcall`` functions (i386 only; elsewhere cdecl)."""
    flags = FUNCFLAG_STDCALL | (FUNCFLAG_USE_ERRNO if use_errno else 0)
    return _prototype(restype, argtypes, flags, use_last_error)


def _prototype(restype: Any, argtypes: tuple, flags: int, use_last_error: bool) -> type:
    key = (restype, argtypes, flags)
    if key not in _PROTOTYPES:
        name = "CFunctionType" if flags & FUNCFLAG_CDECL else "WinFunctionType"
        _PROTOTYPES[key] = type(
            name, (CFuncPtr,), {"_restype_": restype, "_argtypes_": tuple(argtypes), "_flags_": flags}
        )
    return _PROTOTYPES[key]


# ---------------------------------------------------------------------------------------------------
# ctypes classes to CTypes.

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def ctype_of(t: Any, ambiguous: list | None = None) -> Any:
    """The ``CType`` of a ctypes class (or ``None`` for ``void``). Raises ``SignatureError`` for what
    cannot cross to a server (bit-fields, a class that is not a ctypes type). Plain ctypes classes
    that alias several C types on this host are recorded in ``ambiguous`` as ``(class, fixed name,
    aliases)``."""
    if t is None:
        return CType.scalar("void")
    if not isinstance(t, type):
        raise SignatureError(f"{t!r} is not a ctypes type")
    hit = _CACHE.get(t)
    if hit is None:
        found: list = []
        hit = (_compute(t, found, set()), tuple(found))
        _CACHE[t] = hit
    if ambiguous is not None:
        ambiguous.extend(hit[1])
    return hit[0]


def _compute(t: Any, amb: list, building: set) -> Any:
    own = t.__dict__.get("_bb_ctype_")
    if own is not None:
        return own
    if t in _FUNDAMENTAL:
        return CType.scalar(_FUNDAMENTAL[t])
    if t in _AMBIGUOUS:
        fixed, names = _AMBIGUOUS[t]
        amb.append((t, fixed, names))
        return CType.scalar(fixed)
    if issubclass(t, CFuncPtr):
        ret = _compute(t._restype_, amb, building) if t._restype_ is not None else CType.scalar("void")
        params = [(_compute(a, amb, building), _default_direction(a)) for a in t._argtypes_]
        conv = "cdecl" if t._flags_ & FUNCFLAG_CDECL else "stdcall"
        return CType.function(ret, params, conv)
    if issubclass(t, _SIMPLE_BASE):
        for base in t.__mro__[1:]:
            if base in _FUNDAMENTAL or base in _AMBIGUOUS or "_bb_ctype_" in base.__dict__:
                return _compute(base, amb, building)
    if issubclass(t, _ARRAY_BASE):
        return CType.array(_compute(t._type_, amb, building), t._length_)
    if issubclass(t, _POINTER_BASE):
        to = t._type_
        if to in building:  # struct Node { struct Node *next; }: the server sees a void *
            return CType.scalar("void *")
        return CType.pointer(_compute(to, amb, building))
    if issubclass(t, (_ct.Structure, _ct.Union)):
        declared = t.__dict__.get("_bb_fields_", None) or getattr(t, "_fields_", None)
        if declared is None:
            raise SignatureError(f"{t.__name__} has no _fields_ yet (an incomplete type)")
        building = building | {t}
        fields = []
        for f in declared:
            if len(f) > 2:
                raise SignatureError(
                    f"{t.__name__}.{f[0]} is a bit-field ({f[2]} bits): bit-fields cannot be laid out for a "
                    "server yet; declare the containing integer instead and mask it"
                )
            fields.append((f[0], _compute(f[1], amb, building)))
        pack = t.__dict__.get("_pack_") or None
        return CType.aggregate(t.__name__, fields, pack, issubclass(t, _ct.Union))
    if issubclass(t, _CFUNC_BASE):
        raise SignatureError(
            f"{t.__name__} is a plain ctypes function type: use bitbridge.ctypes.CFUNCTYPE, whose callbacks "
            "the server can call"
        )
    raise SignatureError(f"{t.__name__} is not a ctypes type bitbridge knows")


def _default_direction(t: Any) -> str:
    """ctypes gives no directions: a pointer's memory is read and may be written (in/out)."""
    # c_void_p's subclasses too: numpy.ctypeslib.ndpointer types are.
    return "inout" if _is_pointer_class(t) or (isinstance(t, type) and issubclass(t, _ct.c_void_p)) else "in"


def param_ctype(t: Any, amb: list | None = None) -> Any:
    """A parameter's ``CType``: as ``ctype_of``, except that ``c_char_p``/``c_wchar_p`` parameters are
    pointers to characters, so a buffer passed for one (``create_string_buffer``) is copied back as
    ctypes lets the function change it; ``bytes`` and ``str`` still go in NUL-terminated."""
    if t is _ct.c_char_p:
        return CType.pointer(CType.scalar("char"))
    if t is _ct.c_wchar_p:
        return CType.pointer(CType.scalar("wchar_t"))
    return ctype_of(t, amb)


def param_direction(t: Any) -> str:
    if t is _ct.c_char_p or t is _ct.c_wchar_p:
        return "inout"
    return _default_direction(t)


def pointed_object(p: Any) -> Any:
    """What a ctypes pointer object points at: the object it was made from (found among the objects it
    keeps alive, a numpy array's for ``ndarray.ctypes.data_as``), when that object starts at the
    pointed-to address; an array is sent whole. Raises ``ArgumentError`` for a pointer whose extent
    cannot be known (made from an address, or into the middle of an object): sending one element of
    what may be an array would hand the library too little memory."""
    address = _ct.cast(p, _ct.c_void_p).value
    best = None
    seen: set[int] = set()

    def visit(o: Any) -> None:
        nonlocal best
        if o is None or id(o) in seen:
            return
        seen.add(id(o))
        if isinstance(o, dict):
            for v in o.values():
                visit(v)
        elif isinstance(o, _ct._SimpleCData | _ct.Structure | _ct.Union | _ct.Array):
            if _ct.addressof(o) == address and (best is None or _ct.sizeof(o) > _ct.sizeof(best)):
                best = o
            visit(getattr(o, "_objects", None))

    visit(getattr(p, "_objects", None))
    # A pointer read from a struct member keeps nothing itself: its struct keeps what was assigned.
    visit(getattr(getattr(p, "_b_base_", None), "_objects", None))
    if best is not None:
        return best
    arr = getattr(p, "_arr", None)  # numpy's ndarray.ctypes.data_as keeps its array here
    if arr is not None and getattr(arr, "ctypes", None) is not None and arr.ctypes.data == address:
        return arr
    from ._errors import ArgumentError

    raise ArgumentError(
        f"a {type(p).__name__} made from an address: bitbridge cannot tell how much memory it covers, so "
        "it cannot copy it to the server; pass the array (a ctypes array, numpy array or buffer) itself"
    )


def byref_object(arg: Any) -> Any:
    """The object ``byref(obj)`` refers to; ``ArgumentError`` for ``byref(obj, offset)`` with an offset,
    whose extent in the server would be wrong."""
    obj = arg._obj
    text = repr(arg)
    start = text.rfind("(0x")
    if start >= 0 and isinstance(obj, _ct._SimpleCData | _ct.Structure | _ct.Union | _ct.Array):
        address = int(text[start + 1 : text.index(")", start)], 16)
        if address != _ct.addressof(obj):
            from ._errors import ArgumentError

            raise ArgumentError(
                f"byref({type(obj).__name__}, offset): an offset into an object cannot be sent to the server; "
                "pass the part as its own array (or slice a numpy array)"
            )
    return obj


def warn_ambiguous(amb: list, target: str, where: str) -> None:
    """Warns once per use when a plain aliased ctypes class was read as its fixed-width type for a
    server where ``long``/``size_t`` are narrower."""
    if target == "x86_64" or not amb:
        return
    for t, fixed, names in dict.fromkeys(amb):
        warnings.warn(
            f"{where}: ctypes.{t.__name__} is one class for {names} on this host, so it was read as "
            f"{fixed}, 8 bytes; on the {target} server `long` and `size_t` are 4 bytes. Use "
            f"bitbridge.ctypes.c_long / c_size_t / c_ulong for those, or bitbridge.ctypes.c_int64 / "
            f"c_uint64 to say you mean 8 bytes",
            AmbiguousTypeWarning,
            stacklevel=4,
        )


# ---------------------------------------------------------------------------------------------------
# CTypes to ctypes classes laid out like them (declarations' types, shared objects).

_HOST_NAMES = {
    "bool": _ct.c_bool,
    "char": _ct.c_char,
    "signed char": _ct.c_byte,
    "unsigned char": _ct.c_ubyte,
    "short": _ct.c_short,
    "unsigned short": _ct.c_ushort,
    "int": _ct.c_int,
    "unsigned int": _ct.c_uint,
    "int8_t": _ct.c_int8,
    "uint8_t": _ct.c_uint8,
    "int16_t": _ct.c_int16,
    "uint16_t": _ct.c_uint16,
    "int32_t": _ct.c_int32,
    "uint32_t": _ct.c_uint32,
    "int64_t": _ct.c_int64,
    "uint64_t": _ct.c_uint64,
    "long long": _ct.c_longlong,
    "unsigned long long": _ct.c_ulonglong,
    "float": _ct.c_float,
    "double": _ct.c_double,
}


def _view_init(self: Any, *args: Any, **kwargs: Any) -> None:
    """Positional arguments go to the declared members, never to the padding."""
    names = type(self)._bb_names_
    if len(args) > len(names):
        raise TypeError(f"too many initializers for {type(self).__name__}")
    types = dict(type(self)._fields_)
    values = {n: convert(types[n], v) for n, v in zip(names, args, strict=False)}
    values.update({k: convert(types[k], v) for k, v in kwargs.items()})
    super(type(self), self).__init__(**values)


def convert(cls: Any, v: Any) -> Any:
    """``v`` (a tuple, a ctypes object of another layout, a number) as a value for ``cls``, a view class
    or a plain ctypes class."""
    if isinstance(v, cls) or not isinstance(cls, type):
        return v
    names = getattr(cls, "_bb_names_", None)
    if names is not None:
        if isinstance(v, tuple | list):
            return cls(*v)
        if isinstance(v, _ct.Structure | _ct.Union):
            return cls(**{n: getattr(v, n) for n in names})
    if issubclass(cls, _ct.Array) and isinstance(v, tuple | list | _ct.Array):
        return cls(*[convert(cls._type_, x) for x in v])
    return v


_BY_SIZE = {
    (4, True): _ct.c_int32,
    (8, True): _ct.c_int64,
    (4, False): _ct.c_uint32,
    (8, False): _ct.c_uint64,
    (2, False): _ct.c_uint16,
}
_VIEWS: dict[tuple, type] = {}


def view_class(ct: Any, target: str = "host") -> type:
    """A real ctypes class whose instances have exactly ``ct``'s layout on ``target`` (sizes, member
    offsets, padding), so ctypes reads and writes memory laid out for that target: ``long`` becomes a
    4- or 8-byte integer, a struct gets explicit padding and ``_pack_ = 1``, pointers become integers
    holding the server's addresses. Cached per type and target."""
    key = (ct, target)
    hit = _VIEWS.get(key)
    if hit is not None:
        return hit
    kind = ct.kind
    cls: Any
    if kind == "scalar":
        name = ct.name
        if name in _HOST_NAMES:
            cls = _HOST_NAMES[name]
        elif name == "wchar_t":
            cls = _ct.c_wchar if ct.size(target) == _ct.sizeof(_ct.c_wchar) else _ct.c_uint16
        elif name == "long double":
            cls = (
                _ct.c_longdouble
                if ct.size(target) == _ct.sizeof(_ct.c_longdouble)
                else _ct.c_ubyte * ct.size(target)
            )
        else:  # long, size_t and their kin: the target's width
            signed = name in ("long", "ssize_t")
            cls = _BY_SIZE[(ct.size(target), signed)]
    elif kind in ("pointer", "cstr", "wstr", "function"):
        cls = _BY_SIZE[(ct.size(target), False)]
    elif kind == "array":
        cls = view_class(ct.element, target) * ct.length
    elif kind in ("struct", "union"):
        fields = []
        offsets = ct.offsets(target)
        pos = 0
        for i, ((fname, ftype), off) in enumerate(zip(ct.fields, offsets, strict=True)):
            if kind == "struct" and off > pos:
                fields.append((f"_bb_pad{i}", _ct.c_ubyte * (off - pos)))
            fields.append((fname, view_class(ftype, target)))
            pos = off + ftype.size(target)
        size = ct.size(target)
        if kind == "struct" and size > pos:
            fields.append(("_bb_pad_end", _ct.c_ubyte * (size - pos)))
        if kind == "union":
            fields.append(("_bb_whole", _ct.c_ubyte * size))
        base = _ct.Union if kind == "union" else _ct.Structure
        names = [n for n, _ in ct.fields]
        ns = {"_pack_": 1, "_fields_": fields, "_bb_names_": names, "__init__": _view_init}
        meta: Any = type(base)
        cls = meta(ct.name or "anonymous", (base,), ns)
    else:
        raise SignatureError(f"`{ct}` has no ctypes view")
    _VIEWS[key] = cls
    return cls
