"""Reading results, sidecar and formats pickles without running code from them.

:func:`safe_load` / :func:`safe_loads` unpickle with an allowlist (:data:`ADMITTED`): the builtins containers and
scalars, ``collections.OrderedDict``, numpy arrays / dtypes / scalars, torch tensors, and the pandas DataFrame of the
format-records layout (pandas 3 with pyarrow or python strings, and pandas 2.x spellings). Any other global is refused
*before* it is looked up, with one line naming it (:class:`UnsafePickleError`).

A ``find_class`` allowlist alone is not enough: admitted numpy, pandas, pyarrow and torch functions trust the state a
pickle hands them, and a crafted state corrupts memory with no foreign global at all (measured with numpy 2.4,
pandas 3.1, pyarrow and torch 2.13): a dtype whose pickled ``flags`` deny it holds objects turns raw bytes into object
pointers (segfault); a block placement past the frame's columns writes out of bounds in pandas'
``_rebuild_blknos_and_blklocs``; an arrow offset buffer past its data reads out of bounds; a tensor size past its
storage grows the storage over uninitialised memory. So this module runs the pure-Python unpickler
(``pickle._Unpickler``: about 5x the C unpickler's time at protocol 5, some 35 ms more for 2,400 results samples of
``[30, 8]`` float32 plus strings; preliminary, on a busy 2-core machine) and controls every opcode that calls or
mutates: ``REDUCE``/``INST``/``OBJ`` call only admitted callables, each behind a guard that checks its arguments;
``NEWOBJ`` instantiates only the pandas classes that pickle themselves that way; ``BUILD`` sets the state only of
numpy dtypes and arrays, DataFrames and pandas string arrays, after checking it (a dtype must equal numpy's own
dtype of the same spelling, flags included); ``APPEND``/``SETITEM``/``ADDITEMS`` only fill lists, dicts and sets.
A torch storage is read with ``torch.load(weights_only=True)``, never ``weights_only=False`` as pickle's own path does.

What it does not stop: a pickle may still ask for much memory (a large file, a long string) - a refusal of code,
not a resource limit.
"""

from __future__ import annotations

import _compat_pickle
import functools
import io
import pickle
import sys
from collections import OrderedDict
from importlib import import_module
from pathlib import Path
from typing import ClassVar

from . import _safe_pickle_libs as _libs
from .errors import UserError

__all__ = ["ADMITTED", "UnsafePickleError", "safe_load", "safe_loads"]

_WHY = "results files hold only arrays, numbers, strings and tables"


class UnsafePickleError(UserError):
    """A pickle asked for something outside :data:`ADMITTED` (one line: the file, what was refused, how to trust)."""


class _Refused(Exception):
    """Internal: what was refused; :func:`safe_loads` adds the file and the hint."""


def _refuse(what: str):
    raise _Refused(what)


class _Guard:
    """An admitted function as the pickle sees it: checks its arguments, then calls the real one; no state to set."""

    __slots__ = ("fn", "name")

    def __init__(self, name: str, fn):
        self.name, self.fn = name, fn

    def __call__(self, *args):
        return self.fn(*args)

    def __setstate__(self, state):
        _refuse(f"a state for {self.name}")

    def __reduce__(self):
        raise TypeError(f"{self.name} (a safe_pickle guard) cannot be pickled")


class _Token:
    """A class the pickle may only pass to an admitted function (never call, instantiate or set the state of)."""

    __slots__ = ("cls", "name")

    def __init__(self, name: str, cls):
        self.name, self.cls = name, cls

    def __setstate__(self, state):
        _refuse(f"a state for {self.name}")


def _label(obj) -> str:
    """How a refusal names ``obj``: a guard's or token's name, a class's dotted name, else the type's name."""
    if type(obj) in (_Guard, _Token):
        return obj.name
    if isinstance(obj, type):
        return f"{obj.__module__}.{obj.__qualname__}"
    return type(obj).__name__


def _untoken(obj, *classes):
    if type(obj) is not _Token or obj.cls not in classes:
        _refuse(f"{_label(obj)} where a {'/'.join(c.__name__ for c in classes)} belongs")
    return obj.cls


def _shape(s) -> bool:
    return type(s) is tuple and all(type(n) is int and n >= 0 for n in s)


_BYTES = (bytes, bytearray, pickle.PickleBuffer)

# ---------------------------------------------------------------------------------------------------- builtins
_LATIN1 = ("latin1", "latin-1", "iso-8859-1")


def _encode(obj, encoding="utf-8", errors="strict"):  # _codecs.encode: how protocols 0-2 spell bytes
    if type(obj) is not str or encoding not in _LATIN1 or errors != "strict":
        _refuse(f"_codecs.encode with the codec {encoding!r}")
    return obj.encode("latin-1")


def _bytes_of(kind):
    def make(*args):  # no int argument: bytes(10**12) would allocate without the file holding the data
        if not (args == () or (len(args) == 1 and isinstance(args[0], _BYTES))
                or (len(args) == 2 and type(args[0]) is str and args[1] in _LATIN1)):
            _refuse(f"builtins.{kind.__name__} of {', '.join(type(a).__name__ for a in args)}")
        return kind(*args)
    return make


def _reconstructor(cls, base, state):  # copyreg._reconstructor: how protocols 0-1 instantiate classes
    if cls is str and base is str and type(state) is str:  # a str subclass (TorchVersion) loads as str
        return state
    if base is not object or state is not None or not (isinstance(cls, type) and cls in _NEWABLE):
        _refuse(f"copyreg._reconstructor of {_label(cls)}")
    return object.__new__(cls)


_CALLABLE = {dict, list, tuple, set, frozenset, str, int, float, complex, bool, slice, object, OrderedDict}
_NEWABLE: set = set()    # classes NEWOBJ / _reconstructor may instantiate (filled when pandas is admitted)
_BUILDERS: dict = {}     # type -> BUILD checker (filled per library)


# ---------------------------------------------------------------------------------------------------- numpy
@functools.cache
def _np_attr(sub: str, name: str):
    try:  # numpy 2 spelling first: importing numpy.core.* warns there
        return getattr(import_module(f"numpy._core.{sub}"), name)
    except ImportError:
        return getattr(import_module(f"numpy.core.{sub}"), name)


def _canonical_dtype(d) -> bool:
    """True for a plain (unstructured) dtype identical to numpy's own of the same spelling: flags, size and
    alignment included (a pickled state sets them; numpy trusts them)."""
    import numpy as np

    if not isinstance(d, np.dtype) or d.fields is not None or d.subdtype is not None or d.metadata is not None:
        return False
    try:
        c = np.dtype(d.str)
    except TypeError:
        return False
    return (type(d) is type(c) and d == c and d.flags == c.flags and d.itemsize == c.itemsize
            and d.alignment == c.alignment and d.byteorder == c.byteorder)


def _dtype(obj, align=False, copy=True):
    import numpy as np

    if type(obj) is not str or align not in (False, True):  # numpy 1.x wrote 0/1, numpy 2 False/True
        _refuse(f"numpy.dtype of {_label(obj)}")
    d = np.dtype(obj, bool(align), True)  # always a copy: the BUILD that follows never touches numpy's shared dtypes
    if not _canonical_dtype(d):
        _refuse(f"the numpy dtype {obj!r} (structured and sub-array dtypes are not admitted)")
    return d


def _build_dtype(inst, state):
    import numpy as np

    if not (type(state) is tuple and len(state) in (8, 9) and all(x is None for x in state[2:5])):
        _refuse("a structured or malformed numpy dtype state")
    if inst is np.dtype(inst.str):
        _refuse(f"a state for numpy's shared dtype {inst.str}")
    scratch = np.dtype(inst, copy=True)
    scratch.__setstate__(state)
    if not _canonical_dtype(scratch):
        _refuse(f"a numpy {scratch.str} dtype state unlike numpy's own (flags {scratch.flags}, "
                f"size {scratch.itemsize})")
    inst.__setstate__(state)


def _build_ndarray(inst, state):
    if not (type(state) is tuple and len(state) == 5 and _shape(state[1]) and _canonical_dtype(state[2])):
        _refuse("a numpy array state with a malformed shape or dtype")
    raw, dt = state[4], state[2]
    if not (type(raw) is list if dt.hasobject else isinstance(raw, _BYTES)):
        _refuse(f"a numpy {dt.str} array state holding {type(raw).__name__}")
    inst.__setstate__(state)


def _reconstruct(subtype, shape, typecode):
    import numpy as np

    _untoken(subtype, np.ndarray)
    if not (type(shape) is tuple and shape == (0,) and typecode in (b"b", "b")):
        _refuse("numpy _reconstruct of a non-empty array")
    return _np_attr("multiarray", "_reconstruct")(np.ndarray, (0,), b"b")


def _frombuffer(buf, dtype, shape, order):
    if not (isinstance(buf, _BYTES) and _canonical_dtype(dtype) and not dtype.hasobject and _shape(shape)
            and order in ("C", "F")):
        _refuse("numpy _frombuffer with an object or malformed dtype")
    return _np_attr("numeric", "_frombuffer")(buf, dtype, shape, order)


def _scalar(dtype, obj=None):
    if not _canonical_dtype(dtype) or not (dtype.hasobject or (type(obj) is bytes and len(obj) == dtype.itemsize)):
        _refuse("a numpy scalar whose bytes do not match its dtype")
    return _np_attr("multiarray", "scalar")(dtype, obj)


def _numpy_table():
    import numpy as np

    _BUILDERS[np.ndarray] = _build_ndarray
    t = {("numpy", "dtype"): _Guard("numpy.dtype", _dtype), ("numpy", "ndarray"): _Token("numpy.ndarray", np.ndarray)}
    for core in ("numpy.core", "numpy._core"):
        t[(f"{core}.multiarray", "_reconstruct")] = _Guard("numpy _reconstruct", _reconstruct)
        t[(f"{core}.multiarray", "scalar")] = _Guard("numpy scalar", _scalar)
        t[(f"{core}.numeric", "_frombuffer")] = _Guard("numpy _frombuffer", _frombuffer)
    return t


# ---------------------------------------------------------------------------------------------------- allowlist
_FAMILIES = {"numpy": _numpy_table, **_libs.TABLES}

#: Every ``(module, name)`` a pickle may name (py2 spellings ``__builtin__``/``copy_reg`` are mapped first, as pickle
#: does). Callables are handed to the pickle behind argument-checking guards, classes such as ``numpy.ndarray`` and
#: ``pandas.Index`` only as arguments of those guards; see the module docstring for the opcode rules.
#: ``torch.torch_version.TorchVersion`` (``torch.__version__``, a str subclass, in ``metadata["versions"]``) loads as str.
ADMITTED: frozenset[tuple[str, str]] = frozenset(
    [("builtins", c.__name__) for c in _CALLABLE if c is not OrderedDict]
    + [("builtins", "bytes"), ("builtins", "bytearray"), ("collections", "OrderedDict"), ("_codecs", "encode"),
       ("torch.torch_version", "TorchVersion"),
       ("copyreg", "_reconstructor"), ("numpy", "dtype"), ("numpy", "ndarray")]
    + [(f"numpy.{c}.{m}", n) for c in ("core", "_core") for m, n in
       (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"))]
    + list(_libs.NAMES))

_BUILTINS = {("builtins", c.__name__): c for c in _CALLABLE if c is not OrderedDict}
_BUILTINS.update({("builtins", "bytes"): _Guard("builtins.bytes", _bytes_of(bytes)),
                  ("builtins", "bytearray"): _Guard("builtins.bytearray", _bytes_of(bytearray)),
                  ("collections", "OrderedDict"): OrderedDict, ("_codecs", "encode"): _Guard("_codecs.encode", _encode),
                  ("copyreg", "_reconstructor"): _Guard("copyreg._reconstructor", _reconstructor),
                  ("torch.torch_version", "TorchVersion"): str})  # torch.__version__ in metadata.versions: a str
_RESOLVED: dict = {}


def _resolve(module: str, name: str):
    key = (module, name)
    if key not in ADMITTED:
        return None
    if key in _BUILTINS:
        return _BUILTINS[key]
    if key not in _RESOLVED:
        _RESOLVED.update(_FAMILIES[module.split(".")[0]]())
    return _RESOLVED[key]


# ---------------------------------------------------------------------------------------------------- unpickler
def _printable(s: str) -> str:
    return s if s.isprintable() and len(s) <= 120 else ascii(s)[:120]


class _RestrictedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler with an allowlisted ``find_class`` and checked calls, instantiations and states."""

    dispatch: ClassVar[dict] = dict(pickle._Unpickler.dispatch)

    def find_class(self, module, name):
        sys.audit("pickle.find_class", module, name)
        if self.proto < 3 and self.fix_imports:
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        obj = _resolve(module, name)
        if obj is None:
            _refuse(f"{_printable(module)}.{_printable(name)}")
        return obj

    def _call(self, func, args):
        if type(args) is not tuple:
            _refuse("a call with malformed arguments")
        if not (type(func) is _Guard or (isinstance(func, type) and func in _CALLABLE)):
            _refuse(f"a call of {_label(func)}")
        return func(*args)

    def _new(self, cls, args, kwargs=None):
        if cls is str and not kwargs and type(args) is tuple and len(args) == 1 and type(args[0]) is str:
            return args[0]  # NEWOBJ of a str subclass (TorchVersion) loads as str
        if not (isinstance(cls, type) and cls in _NEWABLE) or args or kwargs:
            _refuse(f"an instance of {_label(cls)}")
        return cls.__new__(cls)

    def load_reduce(self):
        args = self.stack.pop()
        self.stack[-1] = self._call(self.stack[-1], args)

    def _instantiate(self, klass, args):  # INST and OBJ
        args = tuple(args)
        self.append(self._new(klass, args) if isinstance(klass, type) and klass in _NEWABLE else self._call(klass, args))

    def load_newobj(self):
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, args))

    def load_newobj_ex(self):
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, args, kwargs))

    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        check = _BUILDERS.get(type(inst))
        if check is None and "numpy" in sys.modules and isinstance(inst, sys.modules["numpy"].dtype):
            check = _build_dtype
        if check is None:
            _refuse(f"a state for {_label(inst)} (BUILD)")
        check(inst, state)

    def _target(self, kinds, what):
        obj = self.stack[-1]
        if type(obj) not in kinds:
            _refuse(f"{what} to a {type(obj).__name__}")
        return obj

    def load_append(self):
        value = self.stack.pop()
        self._target((list,), "appending").append(value)

    def load_appends(self):
        items = self.pop_mark()
        self._target((list,), "appending").extend(items)

    def load_setitem(self):
        value = self.stack.pop()
        key = self.stack.pop()
        self._target((dict, OrderedDict), "setting items")[key] = value

    def load_setitems(self):
        items = self.pop_mark()
        d = self._target((dict, OrderedDict), "setting items")
        for i in range(0, len(items), 2):
            d[items[i]] = items[i + 1]

    def load_additems(self):
        items = self.pop_mark()
        self._target((set,), "adding items").update(items)

    for _op, _fn in ((pickle.REDUCE, load_reduce), (pickle.NEWOBJ, load_newobj), (pickle.NEWOBJ_EX, load_newobj_ex),
                     (pickle.BUILD, load_build), (pickle.APPEND, load_append), (pickle.APPENDS, load_appends),
                     (pickle.SETITEM, load_setitem), (pickle.SETITEMS, load_setitems),
                     (pickle.ADDITEMS, load_additems)):
        dispatch[_op[0]] = _fn
    del _op, _fn


def safe_loads(data: bytes, *, source: str = "<bytes>", trust: bool = False) -> object:
    """Unpickle ``data`` admitting only :data:`ADMITTED` (arrays, numbers, strings, tensors, DataFrames).

    Raises :class:`UnsafePickleError` (one line, naming ``source`` and what was refused) before anything
    outside the allowlist runs. Other errors (a truncated or corrupt file) propagate as pickle raises them.

    ``trust=True`` is plain :func:`pickle.loads`: it runs whatever code the file holds, with your permissions (any
    global, ``__reduce__`` payloads included). Use it only for files you wrote yourself (``--trust_pickle``)."""
    if trust:
        return pickle.loads(data)  # the caller vouched for the file
    return _load(io.BytesIO(data), source)


def safe_load(path, *, trust: bool = False) -> object:
    """:func:`safe_loads` of the file at ``path`` (read as a stream; the error names ``path``)."""
    with open(path, "rb") as fh:
        if trust:
            return pickle.load(fh)  # the caller vouched for the file
        return _load(fh, str(Path(path)))


def _load(fh, source: str):
    try:
        return _RestrictedUnpickler(fh).load()
    except _Refused as exc:
        what = " ".join(str(exc).split())[:240]
        raise UnsafePickleError(f"{source}: refused to unpickle {what} ({_WHY}); if you trust this file, rerun with "
                                "--trust_pickle") from None
