"""The restricted unpickler: crafted payloads are refused before they run, the library's files round-trip.

Every payload test proves its payload live where that is harmless (plain ``pickle.loads`` creates the marker
file), then asserts that ``safe_loads`` refuses it in one line naming what was refused and that no marker exists.
The memory-corruption pickles (no foreign global at all) are never given to plain pickle: they crash it.
"""

from __future__ import annotations

import base64
import io
import math
import os
import pickle
import subprocess
import warnings
from collections import OrderedDict
from fractions import Fraction
from importlib import import_module

import numpy as np
import pandas as pd
import pytest
import torch

from model_inspector.errors import UserError
from model_inspector.safe_pickle import ADMITTED, UnsafePickleError, safe_load, safe_loads

COLUMNS = ["sample", "format", "topic", "alpha", "entropy", "text", "input", "model"]


class Reduce:
    """Pickles as ``fn(*args)`` (optionally followed by ``BUILD state``): the payloads' building block."""

    def __init__(self, fn, *args, state=None):
        self.fn, self.args, self.state = fn, args, state

    def __call__(self):  # pickle wants the first item of __reduce__ callable; nested Reduce objects serve as one
        raise AssertionError("never called here")

    def __reduce__(self):
        return (self.fn, self.args) if self.state is None else (self.fn, self.args, self.state)


def _refused(data: bytes, names: str, source="<bytes>") -> str:
    with pytest.raises(UnsafePickleError) as info:
        safe_loads(data, source=source)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{source}: refused to unpickle ") and "--trust_pickle" in msg
    assert names in msg, msg
    return msg


# ------------------------------------------------------------------------------------------ payloads that run code
def _payloads(m):
    touch = f"touch {m}"
    write = f"open({str(m)!r}, 'w').close()"
    system = Reduce(os.system, touch)
    frame = pd.DataFrame({"x": [1]}, dtype=object)
    frame.loc[0, "x"] = system
    in_attrs = pd.DataFrame({"x": [1.0]})
    in_attrs.attrs["metadata"] = {"ok": [1, 2], "evil": system}
    return {
        "os.system": (system, f"{os.system.__module__}.system"),
        "eval": (Reduce(eval, write), "builtins.eval"),
        "exec": (Reduce(exec, write), "builtins.exec"),
        "subprocess.Popen": (Reduce(subprocess.run, ["touch", str(m)]), "subprocess.run"),
        "getattr chain": (Reduce(Reduce(getattr, Reduce(__import__, "os"), "system"), touch), "builtins.getattr"),
        "dict in list": ([1, {"a": [2.0, system]}], f"{os.system.__module__}.system"),
        "object array": (np.array([np.zeros(2, np.float32), system], dtype=object), f"{os.system.__module__}.system"),
        "DataFrame cell": (frame, f"{os.system.__module__}.system"),
        "DataFrame attrs": (in_attrs, f"{os.system.__module__}.system"),
    }


@pytest.mark.parametrize("case", ["os.system", "eval", "exec", "subprocess.Popen", "getattr chain", "dict in list",
                                  "object array", "DataFrame cell", "DataFrame attrs"])
@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_payload_refused_before_it_runs(tmp_path, case, protocol):
    marker = tmp_path / "ran"
    obj, names = _payloads(marker)[case]
    data = pickle.dumps(obj, protocol=protocol)
    pickle.loads(data)  # the control: the payload is live
    assert marker.exists(), "the control payload did not run"
    marker.unlink()
    _refused(data, names)
    assert not marker.exists()


def test_subprocess_popen_refused(tmp_path):
    marker = tmp_path / "ran"
    data = pickle.dumps(Reduce(subprocess.Popen, ["touch", str(marker)]), protocol=4)
    pickle.loads(data).wait()
    assert marker.exists()
    marker.unlink()
    _refused(data, "subprocess.Popen")
    assert not marker.exists()


def test_import_refused():
    data = pickle.dumps(Reduce(__import__, "os"))
    assert pickle.loads(data) is os
    _refused(data, "builtins.__import__")


def _short(s: str) -> bytes:
    return b"\x8c" + bytes([len(s)]) + s.encode()


@pytest.mark.parametrize("opcodes", ["GLOBAL", "STACK_GLOBAL", "INST", "OBJ"])
def test_handwritten_opcodes_refused(tmp_path, opcodes):
    marker = tmp_path / "ran"
    cmd = f"touch {marker}".encode()
    data = {"GLOBAL": b"cos\nsystem\n(S'" + cmd + b"'\ntR.",
            "STACK_GLOBAL": b"\x80\x04" + _short("os") + _short("system") + b"\x93" + _short(cmd.decode()) + b"\x85R.",
            "INST": b"(S'" + cmd + b"'\nios\nsystem\n.",
            "OBJ": b"(cos\nsystem\nS'" + cmd + b"'\no."}[opcodes]
    pickle.loads(data)
    assert marker.exists()
    marker.unlink()
    _refused(data, "os.system")
    assert not marker.exists()


def test_tensor_shaped_payload_refused(tmp_path):
    marker = tmp_path / "ran"
    buf = io.BytesIO()
    torch.save(Reduce(os.system, f"touch {marker}"), buf, _use_new_zipfile_serialization=False)
    data = pickle.dumps(Reduce(torch._utils._rebuild_tensor_v2, Reduce(torch.storage._load_from_bytes, buf.getvalue()),
                               0, (1,), (1,), False, OrderedDict()))
    with pytest.raises(Exception):  # noqa: B017 - the control runs the payload, then fails to build a tensor of it
        pickle.loads(data)
    assert marker.exists()
    marker.unlink()
    _refused(data, "torch.load(weights_only=True) refuses")
    assert not marker.exists()


def test_reconstructor_of_a_non_admitted_class_refused():
    _refused(b"ccopy_reg\n_reconstructor\n(cfractions\nFraction\nc__builtin__\nobject\nNtR.", "fractions.Fraction")
    _refused(b"ccopy_reg\n_reconstructor\n(cnumpy\nndarray\nc__builtin__\nobject\nNtR.", "copyreg._reconstructor of")


# ------------------------------------------------------------------------------------------ crafted states
def _frombuffer():
    return import_module("numpy._core.numeric" if np.__version__ >= "2" else "numpy.core.numeric")._frombuffer


def test_dtype_with_forged_flags_refused():
    """An object dtype whose pickled flags deny it holds objects: plain pickle makes pointers of b"AAAAAAAA"."""
    forged = Reduce(np.dtype, "O8", False, True, state=(3, "|", None, None, None, -1, -1, 0))
    _refused(pickle.dumps(Reduce(_frombuffer(), b"A" * 8, forged, (1,), "C")), "numpy |O dtype state")
    reconstruct = import_module("numpy._core.multiarray" if np.__version__ >= "2" else "numpy.core.multiarray")
    arr = Reduce(reconstruct._reconstruct, np.ndarray, (0,), b"b", state=(1, (1,), forged, False, b"A" * 8))
    _refused(pickle.dumps([arr]), "numpy |O dtype state")


def test_structured_dtype_refused_and_shared_dtype_untouched():
    _refused(pickle.dumps(np.zeros(2, dtype=[("a", "f4"), ("b", "i8")])), "structured")
    swapped = safe_loads(pickle.dumps(Reduce(np.dtype, "f8", False, False, state=(3, ">", None, None, None, -1, -1, 0))))
    assert swapped == np.dtype(">f8") and np.dtype("f8").byteorder == "="  # the copy changed, numpy's float64 did not


def test_block_placement_past_the_columns_refused():
    from pandas._libs.internals import _unpickle_block
    from pandas.core.indexes.base import _new_Index
    from pandas.core.internals.managers import BlockManager

    def manager(start):
        axes = [Reduce(_new_Index, pd.Index, {"data": np.array(["a"], dtype=object)}),
                Reduce(_new_Index, pd.RangeIndex, {"start": 0, "stop": 2, "step": 1})]
        return pickle.dumps(Reduce(BlockManager, (Reduce(_unpickle_block, np.zeros((1, 2)), slice(start, start + 1), 2),),
                                   axes))

    assert safe_loads(manager(0)).shape == (1, 2)
    _refused(manager(100_000_000), "placements do not cover its 1 columns")


def test_arrow_offsets_past_the_data_refused():
    import pyarrow as pa
    import pyarrow.lib as pl

    def array(end):
        offsets = bytearray(np.array([0, end], dtype=np.int64).tobytes())
        return pickle.dumps(Reduce(pl._restore_array, (pa.large_string(), 1, 0, 0, [None, pa.py_buffer(offsets),
                                                                                     pa.py_buffer(b"ab")], [], None)))

    assert safe_loads(array(2)).to_pylist() == ["ab"]
    _refused(array(1_000_000), "pyarrow array with inconsistent buffers")


def test_tensor_past_its_storage_refused():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        storage = torch.ones(2).storage()
    data = pickle.dumps(Reduce(torch._utils._rebuild_tensor_v2, storage, 0, (100,), (1,), False, OrderedDict()))
    _refused(data, "past its storage of 2 elements")


@pytest.mark.parametrize("module, name", sorted(ADMITTED))
def test_no_admitted_global_takes_a_state(module, name):
    """``BUILD`` with a slot state on a global would be ``setattr(pandas.Index, ...)`` etc. under plain pickle."""
    data = b"\x80\x04c" + f"{module}\n{name}\n".encode() + b"N}" + _short("zz") + b"K\x01s\x86b."
    _refused(data, "a state for")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert not hasattr(getattr(import_module(module), name), "zz")


def test_admitted_holds_no_generic_callable():
    for bad in [("builtins", "eval"), ("builtins", "exec"), ("builtins", "getattr"), ("builtins", "__import__"),
                ("builtins", "type"), ("builtins", "open"), ("os", "system"), ("posix", "system"),
                ("subprocess", "Popen"), ("functools", "partial"), ("operator", "attrgetter"), ("torch", "load"),
                ("numpy", "load"), ("pandas", "read_pickle"), ("torch.storage", "_load_from_bytes_unsafe")]:
        assert bad not in ADMITTED
    assert ("numpy", "dtype") in ADMITTED and ("pandas", "DataFrame") in ADMITTED


# ------------------------------------------------------------------------------------------ round trips
def _assert_same(a, b):
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        if a.dtype == object:
            for x, y in zip(a.ravel(), b.ravel()):
                _assert_same(x, y)
        else:
            np.testing.assert_array_equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.requires_grad == b.requires_grad and torch.equal(a.detach(), b.detach())
    else:
        assert a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)), (a, b)


def _results(n=4):
    rng = np.random.default_rng(0)
    return {"entropy": [rng.random((30, 8), dtype=np.float32) for _ in range(n)],
            "tokens": [np.arange(30, dtype=np.int64) - i for i in range(n)],
            "top_probs": [rng.random((30, 8)).astype(np.float16) for _ in range(n)],
            "text": [f"généré {i}" for i in range(n)], "sample_index": list(range(n)), "correct": [True, False, None, 1],
            "metadata": {"format": "entropy-lens-results", "format_version": 4, "max_len": 30, "seed": 0.5,
                         "versions": {"torch": str(torch.__version__), "numpy": np.__version__},
                         "metrics": {"entropy": "nats"}, "identity": {"alphas": (1.0, 0.5), "empty": {}}}}


@pytest.mark.parametrize("protocol", range(6))
def test_results_dict_round_trips(protocol):
    state = _results()
    _assert_same(safe_loads(pickle.dumps(state, protocol=protocol)), state)


@pytest.mark.parametrize("protocol", [0, 1, 2, 5])
def test_torch_version_loads_as_str(protocol):
    """``metadata["versions"]["torch"]`` is ``torch.__version__``, a ``TorchVersion`` (str subclass) global."""
    out = safe_loads(pickle.dumps({"versions": {"torch": torch.__version__}}, protocol=protocol))
    assert type(out["versions"]["torch"]) is str and out["versions"]["torch"] == str(torch.__version__)


def test_sidecar_part_and_scalars_round_trip():
    part = {k: v[:2] for k, v in _results().items() if k != "metadata"}
    _assert_same(safe_loads(pickle.dumps(part, protocol=pickle.HIGHEST_PROTOCOL)), part)
    scalars = [np.float32(1.5), np.int64(7), np.float16(0.25), np.bool_(True), np.array(["ab"]),
               np.zeros(3, ">f4"), np.array(["2020-01-01"], "M8[s]"), 1 + 2j, {1, 2}, frozenset([3]), b"xy",
               bytearray(b"z"), slice(1, None), OrderedDict(a=1), np.array([np.zeros(2), "s", None, 1.5], dtype=object)]
    for protocol in (0, 2, 5):  # the oracle is plain pickle (numpy < protocol 5 loads ">f4" zeros as native float32)
        data = pickle.dumps(scalars, protocol=protocol)
        _assert_same(safe_loads(data), pickle.loads(data))


def _formats_frame(string_dtype=None):
    rng = np.random.default_rng(1)
    rows = [{"sample": i // 2, "format": "chat", "topic": f"t{i}", "alpha": (1.0, 0.5)[i % 2],
             "entropy": rng.random((10, 8), dtype=np.float32), "text": f"text {i}", "input": "prompt",
             "model": "smollm2-135m-instruct"} for i in range(4)]
    df = pd.DataFrame(rows, columns=COLUMNS)
    if string_dtype is not None:
        df["text"] = df["text"].astype(string_dtype)
        df.loc[0, "text"] = None
    df.attrs["metadata"] = {"format": "entropy-lens-results", "alphas": [1.0, 0.5], "layout": "format_records"}
    return df


@pytest.mark.parametrize("protocol", range(6))
def test_formats_frame_round_trips(protocol):
    for df in (_formats_frame(), _formats_frame(pd.StringDtype("python", na_value=np.nan)),
               _formats_frame(pd.StringDtype("python")), pd.DataFrame(columns=COLUMNS)):
        out = safe_loads(pickle.dumps(df, protocol=protocol))
        pd.testing.assert_frame_equal(out, df)
        assert out.attrs == df.attrs and out["entropy"].map(lambda e: e.dtype).tolist() == df["entropy"].map(
            lambda e: e.dtype).tolist()


#: ``pickle.dumps(frame, 5)`` written by pandas 2.2.3 / numpy 1.26.4 (``pandas.core.*``, ``numpy.core.*`` names):
#: the formats layout, entropy ``[[0..5] as [2, 3]], [0.5 x 6]``, attrs ``{"alphas": [1.0, 0.5], "format_version": 4}``.
PANDAS22_FRAME = """
gAWVvQQAAAAAAACMEXBhbmRhcy5jb3JlLmZyYW1llIwJRGF0YUZyYW1llJOUKYGUfZQojARfbWdylIwecGFuZGFzLmNvcmUuaW50ZXJuYWxzLm1h
bmFnZXJzlIwMQmxvY2tNYW5hZ2VylJOUjBZwYW5kYXMuX2xpYnMuaW50ZXJuYWxzlIwPX3VucGlja2xlX2Jsb2NrlJOUjBJudW1weS5jb3JlLm51
bWVyaWOUjAtfZnJvbWJ1ZmZlcpSTlCiWEAAAAAAAAAAAAAAAAADwPwAAAAAAAOA/lIwFbnVtcHmUjAVkdHlwZZSTlIwCZjiUiYiHlFKUKEsDjAE8
lE5OTkr/////Sv////9LAHSUYksBSwKGlIwBQ5R0lFKUjAhidWlsdGluc5SMBXNsaWNllJOUSwNLBEsBh5RSlEsCh5RSlGgLaA4olhAAAAAAAAAA
AAAAAAAAAAABAAAAAAAAAJRoEowCaTiUiYiHlFKUKEsDaBZOTk5K/////0r/////SwB0lGJLAUsChpRoGXSUUpRoHksASwFLAYeUUpRLAoeUUpRo
C4wVbnVtcHkuY29yZS5tdWx0aWFycmF5lIwMX3JlY29uc3RydWN0lJOUaBCMB25kYXJyYXmUk5RLAIWUQwFilIeUUpQoSwFLBksChpRoEowCTziU
iYiHlFKUKEsDjAF8lE5OTkr/////Sv////9LP3SUYoldlCiMBGNoYXSUjARwb2VtlIwCdDGUjAJ0MpRoDiiWGAAAAAAAAAAAAAAAAACAPwAAAEAA
AEBAAACAQAAAoECUaBKMAmY0lImIh5RSlChLA2gWTk5OSv////9K/////0sAdJRiSwJLA4aUaBl0lFKUaA4olhgAAAAAAAAAAAAAPwAAAD8AAAA/
AAAAPwAAAD8AAAA/lGhGSwJLA4aUaBl0lFKUjAFhlIwBYpSMAXCUjAFxlIwBbZRoU2V0lGJoDiiWMAAAAAAAAAABAAAAAAAAAAIAAAAAAAAABAAA
AAAAAAAFAAAAAAAAAAYAAAAAAAAABwAAAAAAAACUaCZLBoWUaBl0lFKUSwKHlFKUh5RdlCiMGHBhbmRhcy5jb3JlLmluZGV4ZXMuYmFzZZSMCl9u
ZXdfSW5kZXiUk5RoXYwFSW5kZXiUk5R9lCiMBGRhdGGUaDFoM0sAhZRoNYeUUpQoSwFLCIWUaDuJXZQojAZzYW1wbGWUjAZmb3JtYXSUjAV0b3Bp
Y5SMBWFscGhhlIwHZW50cm9weZSMBHRleHSUjAVpbnB1dJSMBW1vZGVslGV0lGKMBG5hbWWUTnWGlFKUaF+MGXBhbmRhcy5jb3JlLmluZGV4ZXMu
cmFuZ2WUjApSYW5nZUluZGV4lJOUfZQoaHJOjAVzdGFydJRLAIwEc3RvcJRLAowEc3RlcJRLAXWGlFKUZYaUUpSMBF90eXCUjAlkYXRhZnJhbWWU
jAlfbWV0YWRhdGGUXZSMBWF0dHJzlH2UjAhtZXRhZGF0YZR9lCiMBmFscGhhc5RdlChHP/AAAAAAAABHP+AAAAAAAABljA5mb3JtYXRfdmVyc2lv
bpRLBHVzjAZfZmxhZ3OUfZSMF2FsbG93c19kdXBsaWNhdGVfbGFiZWxzlIhzdWIu"""

#: ``pickle.dumps(pd.array(["x", None], dtype="string"), 4)`` by pandas 2.2.3 (StringArray, StringDtype, NA).
PANDAS22_STRINGS = """
gASVSgEAAAAAAACME3BhbmRhcy5fbGlicy5hcnJheXOUjBxfX3B5eF91bnBpY2tsZV9OREFycmF5QmFja2VklJOUjBpwYW5kYXMuY29yZS5hcnJh
eXMuc3RyaW5nX5SMC1N0cmluZ0FycmF5lJOUSh8G8QROh5RSlGgDjAtTdHJpbmdEdHlwZZSTlCmBlH2UjAdzdG9yYWdllIwGcHl0aG9ulHNijBVu
dW1weS5jb3JlLm11bHRpYXJyYXmUjAxfcmVjb25zdHJ1Y3SUk5SMBW51bXB5lIwHbmRhcnJheZSTlEsAhZRDAWKUh5RSlChLAUsChZRoEYwFZHR5
cGWUk5SMAk84lImIh5RSlChLA4wBfJROTk5K/////0r/////Sz90lGKJXZQojAF4lIwUcGFuZGFzLl9saWJzLm1pc3NpbmeUjAJOQZSTlGV0lGJ9
lIeUYi4="""


#: ``pickle.dumps(pd.DataFrame({"text": pd.array(["x", None], dtype="string[pyarrow]")}), 5)`` by pandas 2.2.3 with
#: pyarrow 19 (``pandas.core.arrays.string_arrow.ArrowStringArray``, ``StringDtype`` state ``{"storage": "pyarrow"}``).
PANDAS22_ARROW = """
gAWVkgMAAAAAAACMEXBhbmRhcy5jb3JlLmZyYW1llIwJRGF0YUZyYW1llJOUKYGUfZQojARfbWdylIwecGFuZGFzLmNvcmUuaW50ZXJuYWxzLm1h
bmFnZXJzlIwMQmxvY2tNYW5hZ2VylJOUjBZwYW5kYXMuX2xpYnMuaW50ZXJuYWxzlIwPX3VucGlja2xlX2Jsb2NrlJOUjB9wYW5kYXMuY29yZS5h
cnJheXMuc3RyaW5nX2Fycm93lIwQQXJyb3dTdHJpbmdBcnJheZSTlCmBlH2UKIwJX3BhX2FycmF5lIwLcHlhcnJvdy5saWKUjA5fcmVzdG9yZV9h
cnJheZSTlChoEowOdHlwZV9mb3JfYWxpYXOUk5SMDGxhcmdlX3N0cmluZ5SFlFKUSwJLAUsAXZQoaBKMCXB5X2J1ZmZlcpSTlJYBAAAAAAAAAAGU
hZRSlGgclhgAAAAAAAAAAAAAAAAAAAABAAAAAAAAAAEAAAAAAAAAlIWUUpRoHJYBAAAAAAAAAHiUhZRSlGVdlE50lIWUUpSMBl9kdHlwZZSMGnBh
bmRhcy5jb3JlLmFycmF5cy5zdHJpbmdflIwLU3RyaW5nRHR5cGWUk5QpgZR9lIwHc3RvcmFnZZSMB3B5YXJyb3eUc2J1YowIYnVpbHRpbnOUjAVz
bGljZZSTlEsASwFLAYeUUpRLAoeUUpSFlF2UKIwYcGFuZGFzLmNvcmUuaW5kZXhlcy5iYXNllIwKX25ld19JbmRleJSTlGg7jAVJbmRleJSTlH2U
KIwEZGF0YZSMFW51bXB5LmNvcmUubXVsdGlhcnJheZSMDF9yZWNvbnN0cnVjdJSTlIwFbnVtcHmUjAduZGFycmF5lJOUSwCFlEMBYpSHlFKUKEsB
SwGFlGhFjAVkdHlwZZSTlIwCTziUiYiHlFKUKEsDjAF8lE5OTkr/////Sv////9LP3SUYoldlIwEdGV4dJRhdJRijARuYW1llE51hpRSlGg9jBlw
YW5kYXMuY29yZS5pbmRleGVzLnJhbmdllIwKUmFuZ2VJbmRleJSTlH2UKGhXTowFc3RhcnSUSwCMBHN0b3CUSwKMBHN0ZXCUSwF1hpRSlGWGlFKU
jARfdHlwlIwJZGF0YWZyYW1llIwJX21ldGFkYXRhlF2UjAVhdHRyc5R9lIwGX2ZsYWdzlH2UjBdhbGxvd3NfZHVwbGljYXRlX2xhYmVsc5SIc3Vi
Lg=="""


def test_pandas22_numpy126_files_load():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # numpy.core.* names are mapped, never imported
        df = safe_loads(base64.b64decode(PANDAS22_FRAME))
        strings = safe_loads(base64.b64decode(PANDAS22_STRINGS))
        arrow = safe_loads(base64.b64decode(PANDAS22_ARROW))
    assert list(df.columns) == COLUMNS and df["format"].tolist() == ["chat", "poem"]
    assert df["alpha"].tolist() == [1.0, 0.5] and df.attrs == {"metadata": {"alphas": [1.0, 0.5], "format_version": 4}}
    np.testing.assert_array_equal(df["entropy"][0], np.arange(6, dtype=np.float32).reshape(2, 3))
    assert df["entropy"][1].dtype == np.float32 and float(df["entropy"][1].sum()) == 3.0
    assert strings[0] == "x" and strings[1] is pd.NA
    assert arrow["text"].dtype.storage == "pyarrow" and arrow["text"][0] == "x" and arrow["text"][1] is pd.NA


def test_torch_tensors_round_trip():
    with torch.no_grad():
        tensors = {"f": torch.arange(6.0).reshape(2, 3), "view": torch.arange(10)[2:8:2], "b": torch.ones(3, dtype=torch.bfloat16),
                   "i": torch.tensor([1, -2], dtype=torch.int64), "dtype": torch.float32}
    tensors["g"] = torch.zeros(2, requires_grad=True)
    for protocol in (2, 5):
        _assert_same(safe_loads(pickle.dumps(tensors, protocol=protocol)), tensors)


# ------------------------------------------------------------------------------------------ the API
def test_trust_is_plain_pickle_and_errors_name_the_file(tmp_path):
    data = pickle.dumps({"x": Fraction(1, 3)})
    _refused(data, "fractions.Fraction")
    assert safe_loads(data, trust=True) == {"x": Fraction(1, 3)}
    path = tmp_path / "run.pkl"
    path.write_bytes(data)
    with pytest.raises(UnsafePickleError, match=f"^{path}: refused to unpickle fractions.Fraction") as info:
        safe_load(path)
    assert isinstance(info.value, UserError)
    assert safe_load(path, trust=True) == {"x": Fraction(1, 3)}
    path.write_bytes(pickle.dumps(_results(2)))
    _assert_same(safe_load(str(path)), _results(2))


def test_corrupt_pickle_raises_what_pickle_raises():
    data = pickle.dumps(_results(2))
    with pytest.raises((pickle.UnpicklingError, EOFError, ValueError)):
        safe_loads(data[: len(data) // 2])
