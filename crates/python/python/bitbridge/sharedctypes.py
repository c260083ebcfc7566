"""``multiprocessing.sharedctypes`` for processes of any bitness, and for libraries in a server.

The objects live in shared memory laid out for a chosen ``target`` (``"x86_64"`` by default, this
process's; ``"i686"`` for a 32-bit reader), so a 32-bit and a 64-bit process see the same C values.
Each is a real ctypes object over that memory (``RawValue``/``RawArray``), or a synchronized wrapper
around one (``Value``/``Array``), whose lock is a futex in the shared memory itself, working across
processes and bitness. They expose the buffer protocol (``numpy.frombuffer(raw)``, ``memoryview``,
``ctypes`` ``from_buffer``), pass to a bridged function as a pointer with nothing copied (the server
maps the same memory), and, created with ``name=...``, open in another process with ``open(name)``.
"""

from __future__ import annotations

import ctypes as _ct
from typing import Any

from . import _native
from ._types import c_long, c_longlong, c_ulong, c_ulonglong, convert, ctype_of, view_class

typecode_to_type: dict[str, Any] = {
    "c": _ct.c_char,
    "u": _ct.c_wchar,
    "b": _ct.c_byte,
    "B": _ct.c_ubyte,
    "h": _ct.c_short,
    "H": _ct.c_ushort,
    "i": _ct.c_int,
    "I": _ct.c_uint,
    "l": c_long,
    "L": c_ulong,
    "q": c_longlong,
    "Q": c_ulonglong,
    "f": _ct.c_float,
    "d": _ct.c_double,
}


def _type(typecode_or_type: Any) -> Any:
    if isinstance(typecode_or_type, str):
        try:
            return typecode_to_type[typecode_or_type]
        except KeyError:
            raise ValueError(f"unknown typecode {typecode_or_type!r}") from None
    return typecode_or_type


def _create(t: Any, length: int, target: str | None, name: str | None, array: bool) -> Any:
    target = target or _native.HOST_TARGET
    native = _native.SharedArray(ctype_of(t), length, target, name)
    return _view(native, array)


def _view(native: Any, array: bool) -> Any:
    """A ctypes object over the shared memory, keeping the mapping alive."""
    elem = view_class(native.ctype, native.target)
    cls: Any = elem * native.length if array else elem
    obj = cls.from_address(native.address)
    obj._bb_shared = native
    obj._bb_share_with_ = native.share_with
    return obj


def RawValue(typecode_or_type: Any, *args: Any, target: str | None = None, name: str | None = None) -> Any:  # noqa: N802
    """A ctypes object of the type in shared memory, laid out for ``target``, initialised from
    ``args`` as the type's constructor would."""
    t = _type(typecode_or_type)
    obj = _create(t, 1, target, name, array=False)
    if args:
        cls = type(obj)
        one_object = len(args) == 1 and isinstance(args[0], _ct.Structure | _ct.Union | _ct.Array)
        init = convert(cls, args[0]) if one_object else cls(*args)
        _ct.memmove(_ct.addressof(obj), _ct.addressof(init), _ct.sizeof(obj))
    return obj


def RawArray(
    typecode_or_type: Any, size_or_initializer: Any, *, target: str | None = None, name: str | None = None
) -> Any:  # noqa: N802
    """A ctypes array in shared memory: ``size`` zeroed elements, or a copy of an initializer
    sequence."""
    t = _type(typecode_or_type)
    if isinstance(size_or_initializer, int):
        return _create(t, size_or_initializer, target, name, array=True)
    items = list(size_or_initializer)
    obj = _create(t, len(items), target, name, array=True)
    elem = type(obj)._type_
    for i, v in enumerate(items):
        obj[i] = convert(elem, v)
    return obj


class SharedLock:
    """The lock in a shared object's header: a futex that works across processes and bitness,
    recursive like ``multiprocessing.RLock``."""

    def __init__(self, native: Any) -> None:
        self._native = native

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        return self._native.acquire(block, timeout)

    def release(self) -> None:
        self._native.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<bitbridge SharedLock of {self._native.name or 'an anonymous object'}>"


def _lock_for(obj: Any, lock: Any) -> Any:
    if lock is None or lock is True:
        return SharedLock(obj._bb_shared)
    return lock


class Synchronized:
    """A shared object whose every access takes a lock (``multiprocessing.sharedctypes.Synchronized``)."""

    def __init__(self, obj: Any, lock: Any = None) -> None:
        self._obj = obj
        self._lock = _lock_for(obj, lock)
        self.acquire = self._lock.acquire
        self.release = self._lock.release
        self._bb_share_with_ = obj._bb_share_with_

    def __enter__(self) -> bool:
        return self._lock.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._lock.__exit__(*exc)

    def get_obj(self) -> Any:
        return self._obj

    def get_lock(self) -> Any:
        return self._lock

    @property
    def value(self) -> Any:
        with self._lock:
            return self._obj.value

    @value.setter
    def value(self, v: Any) -> None:
        with self._lock:
            self._obj.value = v

    def __getattr__(self, name: str) -> Any:
        # Members of a shared struct, read under the lock.
        if name.startswith("_"):
            raise AttributeError(name)
        with self._lock:
            return getattr(self._obj, name)

    def __setattr__(self, name: str, value: Any) -> None:
        # Members of a shared struct, written under the lock (the wrapper's own state starts with "_").
        if name.startswith("_") or name in ("acquire", "release", "value"):
            object.__setattr__(self, name, value)
            return
        with self._lock:
            setattr(self._obj, name, value)

    def __repr__(self) -> str:
        return f"<Synchronized wrapper for {self._obj!r}>"


class SynchronizedArray(Synchronized):
    """A shared array whose element accesses take a lock."""

    def __len__(self) -> int:
        return len(self._obj)

    def __getitem__(self, i: Any) -> Any:
        with self._lock:
            return self._obj[i]

    def __setitem__(self, i: Any, v: Any) -> None:
        with self._lock:
            self._obj[i] = v

    def __getslice__(self, start: int, stop: int) -> Any:
        return self[start:stop]


class SynchronizedString(SynchronizedArray):
    """A shared ``c_char`` array with ``value`` (up to the first NUL) and ``raw``."""

    @property
    def raw(self) -> bytes:
        with self._lock:
            return self._obj.raw

    @raw.setter
    def raw(self, v: bytes) -> None:
        with self._lock:
            self._obj.raw = v


def synchronized(obj: Any, lock: Any = None) -> Synchronized:
    """Wraps a raw shared object so each access takes ``lock`` (by default, its own)."""
    if isinstance(obj, _ct.Array):
        if obj._type_ is _ct.c_char:
            return SynchronizedString(obj, lock)
        return SynchronizedArray(obj, lock)
    return Synchronized(obj, lock)


def Value(
    typecode_or_type: Any, *args: Any, lock: Any = True, target: str | None = None, name: str | None = None
) -> Any:  # noqa: N802
    """``RawValue`` behind a lock (its own, or ``lock``); ``lock=False`` gives the raw object."""
    obj = RawValue(typecode_or_type, *args, target=target, name=name)
    if lock is False:
        return obj
    return synchronized(obj, None if lock is True else lock)


def Array(
    typecode_or_type: Any,
    size_or_initializer: Any,
    *,
    lock: Any = True,
    target: str | None = None,
    name: str | None = None,
) -> Any:  # noqa: N802
    """``RawArray`` behind a lock (its own, or ``lock``); ``lock=False`` gives the raw object."""
    obj = RawArray(typecode_or_type, size_or_initializer, target=target, name=name)
    if lock is False:
        return obj
    return synchronized(obj, None if lock is True else lock)


def copy(obj: Any) -> Any:
    """A new raw shared object (anonymous, same type and target) holding a copy of ``obj``."""
    raw = obj.get_obj() if isinstance(obj, Synchronized) else obj
    native = raw._bb_shared
    new = _view(
        _native.SharedArray(native.ctype, native.length, native.target, None), isinstance(raw, _ct.Array)
    )
    _ct.memmove(_ct.addressof(new), _ct.addressof(raw), _ct.sizeof(raw))
    return new


def open(name: str, lock: bool = True) -> Any:  # noqa: A001 - the natural name, as os.open
    """Opens the object another process created with ``name=name``: a single value if it has one
    element, else an array, with the type, length and target it was created with; synchronized on its
    shared lock unless ``lock=False``."""
    native = _native.SharedArray.open(name)
    obj = _view(native, native.length != 1)
    return synchronized(obj) if lock else obj


__all__ = [
    "Array",
    "RawArray",
    "RawValue",
    "SharedLock",
    "Synchronized",
    "SynchronizedArray",
    "Value",
    "copy",
    "open",
    "synchronized",
]
