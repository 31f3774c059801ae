"""The model table: the models the original code listed (TransformerLens's table) and the embedded ones, with their
family, the paper's family, depth, width, vocabulary and size. ``get_model_list`` / ``get_model_names`` are the
original ``model_manager`` API (also importable from :mod:`model_inspector.loading` and ``model_manager``).
"""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

import pandas as pd

from .errors import UserError

__all__ = ["MODEL_TABLE", "MODEL_FAMILIES", "ORG_FAMILIES", "TRANSFORMERLENS_TABLE_URL", "ModelTableUpdateError",
           "read_model_table", "get_model_list", "get_model_names", "update_model_table"]

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
#: Where ``get_model_list(update=True)`` reads the TransformerLens model table.
TRANSFORMERLENS_TABLE_URL = (
    "https://transformerlensorg.github.io/TransformerLens/generated/model_properties_table.html"
)

class ModelTableUpdateError(UserError):
    """The online model table could not be fetched; the shipped file is kept."""


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
