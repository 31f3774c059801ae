"""The pandas, pyarrow and torch rules of :mod:`model_inspector.safe_pickle` (kept apart for length).

Each ``*_table()`` imports its library (only when a pickle names it), registers the classes pickle may
instantiate (``NEWOBJ``) and whose state it may set (``BUILD``), and returns ``{(module, name): object}``.

pandas: the DataFrame of the format-records layout. Names found by unpickling such frames (object columns of numpy arrays, string, float and int columns,
``attrs["metadata"]``) under every protocol 0-5 with pandas 3.1 (pyarrow and python string storage) and
pandas 2.2.3 / numpy 1.26.4 (``pandas.core.*`` spellings, python ``string`` dtype, ``pandas._libs.missing.NA``).
Each is handed to the pickle as the real class only where pickle needs one (``NEWOBJ``, ``BUILD``), otherwise
behind a guard that checks its arguments (see the checks below: they stop the out-of-bounds write a crafted block
placement causes in pandas' ``_rebuild_blknos_and_blklocs``).
"""

from __future__ import annotations

import io
import math
import warnings
from collections import OrderedDict

__all__ = ["NAMES", "TABLES"]

_FRAME = (("pandas", "DataFrame"), ("pandas.core.frame", "DataFrame"))
_INDEX = (("pandas", "Index"), ("pandas.core.indexes.base", "Index"))
_RANGE = (("pandas", "RangeIndex"), ("pandas.core.indexes.range", "RangeIndex"))
_SDTYPE = (("pandas", "StringDtype"), ("pandas.core.arrays.string_", "StringDtype"))
_ARROW = (("pandas.arrays", "ArrowStringArray"), ("pandas.core.arrays.string_arrow", "ArrowStringArray"))
_PYSTR = (("pandas.arrays", "StringArray"), ("pandas.core.arrays.string_", "StringArray"))
_NA = (("pandas", "NA"), ("pandas._libs.missing", "NA"))
_FUNCS = (("pandas.core.indexes.base", "_new_Index"), ("pandas._libs.internals", "_unpickle_block"),
          ("pandas.core.internals.managers", "BlockManager"), ("pandas._libs.arrays", "__pyx_unpickle_NDArrayBacked"))

_TORCH_DTYPES = ("float16", "bfloat16", "float32", "float64", "complex64", "complex128", "uint8", "int8", "int16",
                 "int32", "int64", "bool")
_TORCH = (("torch.storage", "_load_from_bytes"), ("torch._utils", "_rebuild_tensor_v2"))
_ARROW_FUNCS = (("pyarrow.lib", "_restore_array"), ("pyarrow.lib", "type_for_alias"), ("pyarrow.lib", "py_buffer"))
_ARROW_TYPES = {"string", "str", "utf8", "large_string", "large_str", "large_utf8", "binary", "large_binary", "bool",
                "null", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32",
                "float64", "halffloat", "float", "double"}

#: The admitted pandas, pyarrow and torch ``(module, name)`` pairs.
NAMES = (_FRAME + _INDEX + _RANGE + _SDTYPE + _ARROW + _PYSTR + _NA + _FUNCS + _ARROW_FUNCS + _TORCH
         + tuple(("torch", n) for n in _TORCH_DTYPES))

_FRAME_KEYS = {"_mgr", "_data", "_typ", "_metadata", "attrs", "_attrs", "_flags"}


def _is_na(x, na) -> bool:
    return x is None or x is na or (type(x) is float and math.isnan(x))


def pandas_table() -> dict:
    """Resolve :data:`NAMES` (imports pandas) and register the classes pickle may instantiate and build."""
    import numpy as np
    import pandas as pd
    from pandas._libs import arrays as libarrays
    from pandas._libs import internals as libinternals
    from pandas.core.indexes.base import _new_Index
    from pandas.core.internals.blocks import Block
    from pandas.core.internals.managers import BlockManager

    from . import safe_pickle as sp

    refuse, untoken = sp._refuse, sp._untoken
    frame, sdtype, arrow, pystr = pd.DataFrame, pd.StringDtype, pd.arrays.ArrowStringArray, pd.arrays.StringArray

    def new_index(cls, d):
        cls = untoken(cls, pd.Index, pd.RangeIndex)
        if type(d) is not dict or not all(type(k) is str for k in d):
            refuse("pandas _new_Index with malformed arguments")
        return _new_Index(cls, d)

    def unpickle_block(values, placement, ndim):
        if type(values) is np.ndarray:
            ok = sp._canonical_dtype(values.dtype)
        else:
            ok = type(values) in (arrow, pystr)
        if type(placement) is slice:
            ok = ok and all(v is None or (type(v) is int and v >= 0) for v in
                            (placement.start, placement.stop, placement.step))
        else:
            ok = ok and (type(placement) is np.ndarray and placement.ndim == 1 and placement.dtype.kind in "iu"
                         and bool((placement >= 0).all()))
        if not ok or ndim not in (1, 2) or type(ndim) is not int:
            refuse("a pandas block with malformed values or placement")
        return libinternals._unpickle_block(values, placement, ndim)

    def block_manager(blocks, axes):
        if not (type(blocks) in (tuple, list) and all(isinstance(b, Block) for b in blocks) and type(axes) is list
                and len(axes) == 2 and all(isinstance(a, pd.Index) for a in axes)):
            refuse("a pandas BlockManager with malformed blocks or axes")
        locs = [np.asarray(b.mgr_locs.as_array) for b in blocks]
        locs = np.sort(np.concatenate(locs)) if locs else np.zeros(0, dtype=np.intp)
        if not np.array_equal(locs, np.arange(len(axes[0]))):  # else pandas writes out of bounds
            refuse(f"a pandas block layout whose placements do not cover its {len(axes[0])} columns once each")
        return BlockManager(tuple(blocks), axes)

    def unpickle_backed(cls, checksum, state=None):
        cls = untoken(cls, pystr)
        if type(checksum) is not int or state is not None:
            refuse("pandas __pyx_unpickle_NDArrayBacked with a state")
        return libarrays.__pyx_unpickle_NDArrayBacked(cls, checksum, None)

    def build_frame(inst, state):
        if not (type(state) is dict and set(state) <= _FRAME_KEYS):
            refuse("a DataFrame state with unknown keys")
        mgr = state.get("_mgr", state.get("_data"))
        attrs = state.get("attrs", state.get("_attrs", {}))
        flags = state.get("_flags", {})
        typ, meta = state.get("_typ", "dataframe"), state.get("_metadata", [])
        if not (type(mgr) is BlockManager and type(typ) is str and typ == "dataframe" and type(meta) is list
                and not meta and type(attrs) is dict and type(flags) is dict
                and set(flags) <= {"allows_duplicate_labels"} and all(type(v) is bool for v in flags.values())):
            refuse("a DataFrame state with a malformed manager, attrs or flags")
        inst.__setstate__(state)

    def build_sdtype(inst, state):  # pandas < 2.3: NEWOBJ + {"storage": ...}
        if not (type(state) is dict and set(state) <= {"storage", "_na_value"}
                and state.get("storage", "python") in ("python", "pyarrow")
                and _is_na(state.get("_na_value"), pd.NA)):
            refuse("a StringDtype state")
        inst.__setstate__(dict(state))

    def build_arrow(inst, state):
        import pyarrow as pa

        if type(state) is not dict or not set(state) <= {"_pa_array", "_data", "_dtype", "_cache"}:
            refuse("an ArrowStringArray state with unknown keys")
        data, cache = state.get("_pa_array", state.get("_data")), state.get("_cache", {})
        if not (isinstance(data, pa.Array) and data.type in (pa.string(), pa.large_string())
                and type(state.get("_dtype")) is sdtype and state["_dtype"].storage == "pyarrow"
                and type(cache) is dict and not cache):
            refuse("an ArrowStringArray state")
        inst.__setstate__(dict(state))

    def build_pystr(inst, state):
        ok = (type(state) is tuple and len(state) in (2, 3) and type(state[0]) is sdtype
              and state[0].storage == "python" and type(state[1]) is np.ndarray and state[1].dtype == object
              and state[1].ndim == 1 and (len(state) == 2 or (type(state[2]) is dict and not state[2])))
        if not ok or not all(type(x) is str or _is_na(x, pd.NA) for x in state[1]):
            refuse("a StringArray state holding other than strings and missing values")
        inst.__setstate__(state)

    sp._NEWABLE.update((frame, sdtype, arrow))
    sp._CALLABLE.add(sdtype)  # pandas >= 2.3 pickles it as StringDtype(storage, na_value); pandas checks both
    sp._BUILDERS.update({frame: build_frame, sdtype: build_sdtype, arrow: build_arrow, pystr: build_pystr})
    out = {k: frame for k in _FRAME}
    out.update({k: sdtype for k in _SDTYPE})
    out.update({k: arrow for k in _ARROW})
    out.update({k: pd.NA for k in _NA})
    out.update({k: sp._Token(f"{k[0]}.{k[1]}", pd.Index) for k in _INDEX})
    out.update({k: sp._Token(f"{k[0]}.{k[1]}", pd.RangeIndex) for k in _RANGE})
    out.update({k: sp._Token(f"{k[0]}.{k[1]}", pystr) for k in _PYSTR})
    for key, fn in zip(_FUNCS, (new_index, unpickle_block, block_manager, unpickle_backed)):
        out[key] = sp._Guard(f"{key[0]}.{key[1]}", fn)
    return out


def arrow_table() -> dict:
    """pyarrow: the arrays behind pandas' pyarrow strings; every array is validated in full before use (an offset
    past its data buffer would otherwise be read out of bounds)."""
    import pyarrow.lib as pl

    from . import safe_pickle as sp

    def restore_array(data):
        arr = pl._restore_array(data)
        try:
            arr.validate(full=True)
        except Exception as exc:  # noqa: BLE001 - any inconsistency is a refusal
            sp._refuse(f"a pyarrow array with inconsistent buffers ({type(exc).__name__})")
        return arr

    def type_for_alias(name):
        if type(name) is not str or name not in _ARROW_TYPES:
            sp._refuse(f"the pyarrow type {name!r}")
        return pl.type_for_alias(name)

    def py_buffer(obj):
        if not isinstance(obj, sp._BYTES):
            sp._refuse(f"pyarrow.lib.py_buffer of {type(obj).__name__}")
        return pl.py_buffer(obj)

    return {k: sp._Guard(f"{k[0]}.{k[1]}", fn) for k, fn in zip(_ARROW_FUNCS, (restore_array, type_for_alias, py_buffer))}


def torch_table() -> dict:
    """torch: a pickled tensor is ``_rebuild_tensor_v2(_load_from_bytes(b), ...)``; ``_load_from_bytes`` runs
    ``torch.load(weights_only=False)``, so the guard reads ``b`` with ``weights_only=True`` instead, and refuses a
    size past the storage (torch would grow the storage over uninitialised memory) and backward hooks."""
    import torch
    from torch._utils import _rebuild_tensor_v2

    from . import safe_pickle as sp

    def load_storage(b):
        if type(b) is not bytes:
            sp._refuse("torch.storage._load_from_bytes of a non-bytes argument")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TypedStorage deprecation
                storage = torch.load(io.BytesIO(b), weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any failure is a refusal of the embedded payload
            sp._refuse(f"a torch storage that torch.load(weights_only=True) refuses ({type(exc).__name__})")
        if not isinstance(storage, torch.storage.TypedStorage):
            sp._refuse(f"a torch storage payload holding {type(storage).__name__}")
        return storage

    def rebuild_tensor(storage, offset, size, stride, requires_grad, hooks, metadata=None):
        if not (isinstance(storage, torch.storage.TypedStorage) and type(offset) is int and offset >= 0
                and sp._shape(size) and sp._shape(stride) and len(size) == len(stride) and type(requires_grad) is bool
                and type(hooks) in (dict, OrderedDict) and not hooks
                and (metadata is None or (type(metadata) is dict
                                          and all(type(k) is str and type(v) is bool for k, v in metadata.items())))):
            sp._refuse("a torch tensor with a malformed layout or backward hooks")
        n = storage._untyped_storage.nbytes() // storage.dtype.itemsize
        if 0 not in size and offset + sum((s - 1) * st for s, st in zip(size, stride)) >= n:
            sp._refuse(f"a torch tensor of size {tuple(size)} past its storage of {n} elements")
        return _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, OrderedDict(), metadata)

    out = {k: sp._Guard(f"{k[0]}.{k[1]}", fn) for k, fn in zip(_TORCH, (load_storage, rebuild_tensor))}
    out.update({("torch", n): getattr(torch, n) for n in _TORCH_DTYPES})
    return out


TABLES = {"pandas": pandas_table, "pyarrow": arrow_table, "torch": torch_table}
