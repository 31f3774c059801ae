"""The lens explorer: one self-contained HTML file per run (no network, no CDN: the page draws SVG itself).

``entropy-lens explore FILE [--out report.html]`` (or ``python3 -m model_inspector.explore FILE``) writes a
page with the run summary (model, settings, counts, and the evaluation CSVs that ``run_tests.py`` left beside
the file), class-mean profiles against relative depth (±1 std band) for any metric in the file, a PCA and a
t-SNE of the samples' mean profiles coloured by a label (hover: prompt, generated text, label; click: the
sample), and the sample view: the step x layer grid coloured by the metric with the lens's top token in each
cell (its probability on hover). A filter by label class and a search in the prompts narrow every view. The
page colours by ``correct`` (MMLU), ``format`` (formats files) or the task class (TinyStories) first; formats
files (window means ``[window, layer]``, no tokens) get windows for rows. The page itself (HTML, CSS, script)
is :mod:`model_inspector.explore_page`.

Results files are untrusted input, and the page never runs their content: all data travels as JSON inside a
non-executable ``<script type="application/json">`` block with ``<``, ``>``, ``&``, U+2028 and U+2029 escaped,
and the page's script builds every element through DOM properties (``textContent``, ``setAttribute``), never
from HTML strings.

The arrays travel as base64 typed arrays: metrics quantised to uint16 (resolution: the metric's range / 65534,
about 2e-4 nats for entropies), top-token ids as uint16 indexes into the file's token table, probabilities as
uint8 (1/255).

This module is longer than ~400 lines (about 450) on purpose: it is one concern, turning a results file and the
evaluations beside it into the page's data (summary, identity matching of evaluation CSVs, class profiles,
embeddings, sample grids, strategies), and splitting those steps apart would scatter one data contract with the page.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import UserError
from .options import ArgumentParser, Integer, ListOf, Option, Text, add_flags, option, parse_checked

__all__ = ["MAX_COLOURS", "MAX_SAMPLES", "ExplorerData", "build_report", "explorer_data", "main", "safe_json",
           "tidy_evaluation", "write_report"]

#: Samples kept in one page; a larger file is subsampled evenly (the page says so).
MAX_SAMPLES = 5000
#: Distinct colours the page uses; a label with more classes is not coloured (the page says why).
MAX_COLOURS = 20
#: Labels with more distinct values than this (or than half the samples) are not offered at all.
MAX_FILTER_CLASSES = 60
_NAN16 = 65535
_HIDDEN_LABELS = {"input", "text", "model", "sample_index", "question_index", "prompt_tokens"}
#: Default colouring, first present wins: MMLU correctness, output format, TinyStories task class.
_DEFAULT_LABELS = ("correct", "format", "task", "class")
_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _b64(arr: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(arr).tobytes()).decode("ascii")


def _finite(obj):
    """``obj`` with every non-finite float replaced by ``None`` (JSON has no NaN) and numpy scalars unboxed."""
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


def safe_json(obj) -> str:
    """JSON for an HTML ``<script type="application/json">`` block: nothing in it can close or comment out a tag
    (``<``, ``>``, ``&`` escaped) or end a JavaScript line (U+2028, U+2029 escaped)."""
    text = json.dumps(_finite(obj), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return re.sub("[<>&\u2028\u2029]", lambda m: _JSON_ESCAPES[m.group()], text)


def _label_text(key: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == "":
        return "(none)"
    if key == "correct" and str(value) in ("0", "1", "False", "True", "0.0", "1.0"):
        return "correct" if str(value) in ("1", "True", "1.0") else "incorrect"
    return str(value)


def _label_columns(res) -> dict[str, list[str]]:
    """Per-sample label columns (display strings, ``(none)`` for empty values) worth filtering by: at least
    two distinct values and at most :data:`MAX_FILTER_CLASSES` (and not one per sample)."""
    out = {}
    n = len(res)
    for key in res.label_keys:
        if key in _HIDDEN_LABELS:
            continue
        values = [_label_text(key, v) for v in res[key]]
        k = len(set(values))
        if 1 < k <= max(2, min(MAX_FILTER_CLASSES, n // 2)) or (key == "correct" and k > 1):
            out[key] = values
    if "prompt" in out and "task" not in out:  # the paper's task class is the first word of the prompt label
        out = {"class": [v.split("_")[0] for v in out["prompt"]], **out}
    return out


def _evaluations(path: Path, res, folders=()) -> list[dict]:
    """The evaluation and strategy CSVs written for this file (``NAME_tm_*.csv`` by ``evaluate`` / ``run_tests.py``,
    ``NAME_strategies_*.csv`` by ``strategies``) beside it or in ``folders``: a list of ``{"name", "columns", "rows"}``
    (rows: lists of JSON values), each with an optional ``"note"``. A CSV that records another identity or sample count
    than this file (an evaluation of an earlier or partial version) is left out, with a note saying so; one that
    records none is shown with a note."""
    import pandas as pd

    from .run.config import RunIdentity

    ident = res.metadata.get("identity")
    digest = RunIdentity(ident).digest() if isinstance(ident, dict) else "none"
    found, seen = [], set()
    for folder in [path.parent, *map(Path, folders)]:
        for csv in sorted(folder.glob(f"{path.stem}_tm_*.csv")) + sorted(folder.glob(f"{path.stem}_strategies_*.csv")):
            if csv.resolve() in seen:
                continue
            seen.add(csv.resolve())
            try:
                df = pd.read_csv(csv)
            except (OSError, ValueError) as exc:  # empty, truncated or not a CSV
                found.append({"name": csv.name, "columns": [], "rows": [], "note": f"unreadable, left out "
                              f"({type(exc).__name__})"})
                continue
            note = None
            if "results_identity" in df.columns and len(df):
                rec_id, rec_n = str(df["results_identity"].iloc[0]), int(df["results_n_samples"].iloc[0])
                if rec_id != digest or rec_n != len(res):
                    found.append({"name": csv.name, "columns": [], "rows": [], "note": f"left out: it evaluates "
                                  f"another version of this file ({rec_n} samples, identity {rec_id}; this file: "
                                  f"{len(res)} samples, identity {digest}); evaluate the file again"})
                    continue
                df = df.drop(columns=[c for c in ("results_file", "results_identity", "results_n_samples")
                                      if c in df.columns])
            elif csv.name.startswith(f"{path.stem}_tm_"):
                note = "this CSV records no results identity (an older entropy-lens): it may describe another version"
            found.append({"name": csv.name, "columns": [str(c) for c in df.columns], "note": note,
                          "rows": json.loads(df.head(200).to_json(orient="values", double_precision=4))})
    return found


def _short_lists(value):
    """``"[0.512345, 0.75]"`` (a by-fold list in a CSV cell) -> ``"[0.512, 0.75]"``; anything else as is."""
    if isinstance(value, str) and value.startswith("[") and value.endswith("]"):
        try:
            items = json.loads(value)
        except ValueError:
            return value
        if isinstance(items, list) and all(isinstance(v, (int, float)) for v in items):
            return "[" + ", ".join(f"{v:.3g}" for v in items) + "]"
    return value


def tidy_evaluation(table: dict) -> dict:
    """One evaluation table for the page: by-fold lists shortened, and the rows whose ``note`` says
    ``skipped...`` folded into one line in ``"note"`` ("39 subjects skipped (reason): a, b, ...")."""
    cols, rows = list(table["columns"]), [[_short_lists(v) for v in r] for r in table["rows"]]
    notes = [table["note"]] if table.get("note") else []
    if "note" in cols:
        j = cols.index("note")
        skipped = [r for r in rows if str(r[j] or "").startswith("skipped")]
        if skipped:
            rows = [r for r in rows if r not in skipped]
            name = "subject" if "subject" in cols else cols[0]
            what = [str(r[cols.index(name)]) for r in skipped]
            reasons = sorted({str(r[j]).removeprefix("skipped").strip(" :") for r in skipped})
            noun = ("subject" if name == "subject" else "row") + ("s" if len(skipped) > 1 else "")
            notes.append(f"{len(skipped)} {noun} skipped ({'; '.join(reasons)}): {', '.join(what)}")
        keep = [i for i, c in enumerate(cols) if any(r[i] is not None for r in rows)] if rows else []
        cols, rows = [cols[i] for i in keep], [[r[i] for i in keep] for r in rows]
    # the numbers a reader looks for first, the long descriptions last (the box scrolls sideways)
    first = [c for c in _HEADLINE if c in cols]
    order = first + [c for c in cols if c not in first and c not in _TRAILING] + [c for c in _TRAILING if c in cols]
    idx = [cols.index(c) for c in order]
    return {"name": table["name"], "columns": order, "rows": [[r[i] for i in idx] for r in rows],
            "note": " ".join(notes) or None}


_HEADLINE = ("feature", "subject", "class", "kind", "model_roc_auc", "roc_auc", "roc_auc_std", "baseline_roc_auc",
             "improvement", "vs_baseline", "p_value", "p_vs_baseline", "significant", "vs_reference", "p_vs_reference")
_TRAILING = ("description", "note")


def _unit(definition: str) -> str:
    m = re.search(r"\[([^\[\]]+)\]\s*$", definition or "")
    return m.group(1) if m else ""


@dataclass
class ExplorerData:
    """Everything the page shows, with its axes explicit.

    ``profiles[name]``: float ``[sample, step, layer]`` (a step is a generated token, or a token window in
    formats files; entropies in nats); ``top_index``: uint16 ``[sample, step, layer]`` indexes into ``vocab``
    (65535: none); ``top_prob``: float ``[sample, step, layer]`` in [0, 1]; ``tokens``: uint16 ``[sample, step]``
    indexes into ``vocab``; ``embeddings[name]``: float ``[sample, 2]``; ``labels[name]``: ``[sample]`` strings."""

    summary: dict
    profiles: dict[str, np.ndarray]
    definitions: dict[str, str]
    labels: dict[str, list[str]]
    prompts: list[str]
    texts: list[str]
    embeddings: dict[str, np.ndarray]
    pca_variance: list[float]
    vocab: list[str] = field(default_factory=list)
    top_index: np.ndarray | None = None
    top_prob: np.ndarray | None = None
    tokens: np.ndarray | None = None
    evaluations: list[dict] = field(default_factory=list)
    default_label: str = ""

    def __post_init__(self):
        shapes = {k: v.shape for k, v in self.profiles.items()}
        if not shapes or len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 3:
            raise UserError(f"profiles must share one [sample, step, layer] shape (got {shapes})")
        n, t, _ = self.shape
        for name, arr in (("top_index", self.top_index), ("top_prob", self.top_prob)):
            if arr is not None and arr.shape != self.shape:
                raise UserError(f"{name} has shape {arr.shape}, expected [sample, step, layer] = {self.shape}")
        if self.tokens is not None and self.tokens.shape != (n, t):
            raise UserError(f"tokens have shape {self.tokens.shape}, expected [sample, step] = {(n, t)}")
        for name, col in [*self.labels.items(), ("prompts", self.prompts), ("texts", self.texts)]:
            if len(col) != n:
                raise UserError(f"{name!r} has {len(col)} entries for {n} samples")
        for name, emb in self.embeddings.items():
            if emb.shape != (n, 2):
                raise UserError(f"embedding {name} has shape {emb.shape}, expected [sample, 2] = {(n, 2)}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(sample, step, layer)``."""
        return next(iter(self.profiles.values())).shape

    def payload(self) -> dict:
        """The page's JSON (named things as lists of records, so no data string ever becomes an object key)."""
        n, t, layers = self.shape
        metrics = []
        for name, x in self.profiles.items():
            x = x.astype(np.float64)
            finite = x[np.isfinite(x)]
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
            scale = (hi - lo) / (_NAN16 - 1) or 1.0
            q = np.where(np.isfinite(x), np.round((np.nan_to_num(x, nan=lo) - lo) / scale), _NAN16).astype(np.uint16)
            metrics.append({"name": name, "definition": self.definitions.get(name, ""),
                            "unit": _unit(self.definitions.get(name, "")), "lo": lo, "hi": hi, "scale": scale,
                            "data": _b64(q)})
        return {
            "summary": self.summary, "metrics": metrics, "N": n, "T": t, "L": layers,
            "labels": [{"name": k, "values": v} for k, v in self.labels.items()], "defaultLabel": self.default_label,
            "prompts": self.prompts, "texts": self.texts, "vocab": self.vocab,
            "top": None if self.top_index is None else _b64(self.top_index.astype(np.uint16)),
            "topP": None if self.top_prob is None else _b64((np.nan_to_num(self.top_prob).clip(0, 1) * 255).round()
                                                            .astype(np.uint8)),
            "tokens": None if self.tokens is None else _b64(self.tokens.astype(np.uint16)),
            "emb": [{"name": k, "points": np.round(v, 4).tolist()} for k, v in self.embeddings.items()],
            "pcaVar": [round(float(v), 4) for v in self.pca_variance],
            "evaluations": [tidy_evaluation(e) for e in self.evaluations],
        }


def _summary(res, path: Path, n_all: int, shape: tuple, top_note: str | None) -> dict:
    meta = res.metadata
    ident = meta.get("identity") if isinstance(meta.get("identity"), dict) else {}
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    n, t, layers = shape
    sample = ident.get("sample", config.get("sample"))
    temp = ident.get("temperature", config.get("temperature"))
    decoding = (f"sampled, temperature {temp}" if temp is not None else "sampled") if sample else "greedy"
    max_len = ident.get("max_len", config.get("max_len"))
    windows, window_tokens = meta.get("num_windows"), None
    windows = windows if isinstance(windows, int) and not isinstance(windows, bool) and windows > 0 else None
    if windows:
        per = (f"{max_len // windows}" if isinstance(max_len, int) and max_len % windows == 0
               else f"about {max_len / windows:.3g}" if isinstance(max_len, (int, float)) else "?")
        shape_text = f"{n_all} prompts × {t} windows of {per} tokens × {layers} layers"
        window_tokens = max_len // windows if isinstance(max_len, int) and max_len % windows == 0 else None
    else:
        shape_text = f"{n_all} samples × {t} generated tokens × {layers} layers"
    settings = {k: ident.get(k, config.get(k)) for k in ("dtype", "device", "max_len", "seed", "prepend_bos",
                                                         "chat_template", "batch_size") if k in ident or k in config}
    return {
        "file": path.name, "model": str(ident.get("model") or meta.get("model_id") or "?"),
        "model_fingerprint": ident.get("model_fingerprint"), "dataset": ident.get("dataset") or config.get("dataset"),
        "samples": n_all, "shown": n, "steps": t, "layers": layers, "windows": windows, "window_tokens": window_tokens,
        "shape_text": shape_text,
        "decoding": decoding, "settings": settings, "complete": meta.get("complete"), "created": meta.get("created"),
        "format_version": meta.get("format_version"), "top_note": top_note, "partial": _partial(res, path),
    }


def _partial(res, path: Path) -> str | None:
    """One line when the file is not a finished run (interrupted, or being written now), else ``None``."""
    from .commands.evaluate import check_complete

    return check_complete(res, path, allow_partial=True)


def to_index(a: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Token ids ``a`` (any shape) -> uint16 positions in the sorted ``ids`` (65535 where absent or negative)."""
    pos = np.clip(np.searchsorted(ids, a), 0, len(ids) - 1)
    return np.where(ids[pos] == a, pos, _NAN16).astype(np.uint16)


def _embeddings(mean: np.ndarray, seed: int) -> tuple[dict[str, np.ndarray], list[float]]:
    """t-SNE (5 samples or more) and PCA of the mean profiles ``mean`` ``[sample, layer]``: ``({name: [sample, 2]},
    the two components' explained variance ratios)``."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    from .threads import default_threads

    n, layers = mean.shape
    with warnings.catch_warnings():  # identical samples: no variance to explain
        warnings.simplefilter("ignore", RuntimeWarning)
        pca = PCA(n_components=min(2, n, layers), random_state=seed).fit(mean)
    pc = np.zeros((n, 2))
    pc[:, : pca.n_components_] = pca.transform(mean)
    emb = {}
    if n >= 5 and np.ptp(mean, axis=0).max() > 0:  # identical points crash scikit-learn's Barnes-Hut t-SNE
        perp = min(30.0, max(2.0, (n - 1) / 3))
        # OpenMP threads spinning on busy cores: 66 s against 20 s with one thread for 2,400 samples on a loaded
        # 2-core machine (preliminary), so only the idle cores
        with threadpool_limits(default_threads(), user_api="openmp"):
            emb["t-SNE"] = TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed).fit_transform(mean)
    emb["PCA"] = pc
    return emb, [float(v) for v in np.nan_to_num(pca.explained_variance_ratio_)] + [0.0] * (2 - pca.n_components_)


def explorer_data(path: str | Path, *, metric: str | None = None, max_samples: int = MAX_SAMPLES,
                  seed: int = 42, trust: bool = False, eval_dirs=()) -> ExplorerData:
    """Read results file ``path`` into the page's :class:`ExplorerData` (t-SNE and PCA of the mean profiles);
    ``trust``: read a pickle without the restricted unpickler (``--trust_pickle``); ``eval_dirs``: more folders to
    look for its evaluations in (``--out_dir`` of ``evaluate``)."""
    from .results import Results

    path = Path(path)
    res = Results.load(path, trust=trust)
    metrics = res.metric_keys
    if not metrics:
        raise UserError(f"{path} holds no [step, layer] profiles to explore (expected columns like 'entropy')")
    if max_samples < 1:
        raise UserError(f"--max_samples must be at least 1 (got {max_samples})")
    main_metric = metric or ("entropy" if "entropy" in metrics else metrics[0])
    if main_metric not in metrics:
        raise UserError(f"no metric {main_metric!r} in {path}; it has {', '.join(metrics)} (choose one with --metric)")
    metrics = [main_metric] + [m for m in metrics if m != main_metric]
    n_all = len(res)
    keep = np.arange(n_all) if n_all <= max_samples else np.linspace(0, n_all - 1, max_samples).round().astype(int)
    try:
        profiles = {m: res.profiles(m)[keep] for m in metrics}  # [sample, step, layer]
    except ValueError as exc:
        raise UserError(f"{path}: profiles of unequal shapes ({exc})") from None
    n, t, layers = profiles[main_metric].shape
    meta = res.metadata
    raw = meta.get("token_strings") if isinstance(meta.get("token_strings"), dict) else {}
    strings = {int(k): str(v) for k, v in raw.items() if str(k).lstrip("-").isdigit()}
    ids = np.array(sorted(strings), dtype=np.int64)[:_NAN16]  # uint16 indexes; 65535 means none

    def first(col: str, shape: tuple) -> np.ndarray:
        """Column ``col`` stacked as ``[sample, *shape]``, keeping the first of any trailing top-k axis."""
        try:
            return np.stack([np.asarray(v).reshape(*shape, -1)[..., 0] for v in res[col]])[keep]
        except ValueError:
            raise UserError(f"{path}: column {col!r} does not match the profiles' [step, layer] = {(t, layers)}") from None

    top = top_p = tokens = None
    top_note = None
    if "top_ids" in res and "top_probs" in res and len(ids):
        top = to_index(first("top_ids", (t, layers)), ids)
        top_p = first("top_probs", (t, layers)).astype(np.float32)
    elif meta.get("layout") == "format_records" or "num_windows" in meta:
        top_note = "no top lens tokens in this file (formats runs keep window means)"
    else:
        top_note = "no top lens tokens in this file (profile with --keep_top_tokens 1 to see them)"
    if "tokens" in res and len(ids):
        tokens = to_index(first("tokens", (t,)), ids)

    with warnings.catch_warnings():  # a sample whose every step is NaN at a layer: 0 there
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nan_to_num(np.nanmean(profiles[main_metric].astype(np.float64), axis=1))  # [sample, layer]
    emb, variance = _embeddings(mean, seed)
    labels = {k: [v[i] for i in keep] for k, v in _label_columns(res).items()}
    default = next((k for k in _DEFAULT_LABELS if k in labels),
                   next((k for k, v in labels.items() if len(set(v)) <= MAX_COLOURS), ""))
    definitions = meta.get("metrics") if isinstance(meta.get("metrics"), dict) else {}
    return ExplorerData(
        summary=_summary(res, path, n_all, (n, t, layers), top_note), profiles=profiles,
        definitions={str(k): str(v) for k, v in definitions.items()}, labels=labels,
        prompts=[str(res["input"][i]) for i in keep] if "input" in res else [""] * n,
        texts=[str(res["text"][i]) for i in keep] if "text" in res else [""] * n,
        embeddings=emb, pca_variance=variance,
        vocab=[strings[int(i)] for i in ids], top_index=top, top_prob=top_p, tokens=tokens,
        evaluations=_evaluations(path, res, eval_dirs), default_label=default)


def build_report(path: str | Path, *, metric: str | None = None, max_samples: int = MAX_SAMPLES, seed: int = 42,
                 trust: bool = False, eval_dirs=()) -> str:
    """The explorer page of results file ``path`` as one HTML string."""
    return _page(path, explorer_data(path, metric=metric, max_samples=max_samples, seed=seed, trust=trust,
                                     eval_dirs=eval_dirs))


def _page(path: str | Path, data: "ExplorerData") -> str:
    """The page of ``data`` (read from ``path``): the data travels as escaped JSON, never as markup."""
    from .explore_page import PAGE

    title = html.escape(f"Entropy-Lens explorer: {Path(path).name}", quote=True)
    head, rest = PAGE.split("__TITLE__", 1)
    middle, tail = rest.split("__DATA__", 1)
    return head + title + middle + safe_json(data.payload()) + tail


def write_report(path: str | Path, out: str | Path | None = None, **kwargs) -> Path:
    """Write the explorer page of ``path`` to ``out`` (default: ``NAME.html`` beside it); returns its path."""
    return _write_page(path, out, explorer_data(path, **kwargs))


def _write_page(path, out, data: "ExplorerData") -> Path:
    from .storage import atomic_write_bytes

    out = Path(out) if out else Path(path).with_suffix(".html")
    atomic_write_bytes(out, _page(path, data).encode("utf-8"))
    return out


#: this command's own options (``--metric`` and ``--trust_pickle`` are the shared ones)
OPTIONS = (
    Option("out", None, "the HTML file to write (default: FILE with .html)", Text(), group="explore"),
    Option("max_samples", MAX_SAMPLES, "samples in the page; more are subsampled evenly", Integer(min=1),
           group="explore"),
    Option("eval_dir", None, "another folder with this file's evaluations (evaluate --out_dir); the folder beside "
           "the file is always searched", ListOf(Text(), none=True), group="explore", nargs="+"),
)


def build_parser():
    p = ArgumentParser(prog="entropy-lens explore", description=__doc__)
    p.add_argument("file", help="results file (.pkl or .npz from the experiment scripts)")
    add_flags(p, ["metric", "trust_pickle"], extra=OPTIONS)
    return p


def main(argv=None) -> int:
    args = parse_checked(build_parser(), argv, [option("metric"), option("trust_pickle"), *OPTIONS])
    from .storage import preflight_output

    out = Path(args.out) if args.out else Path(args.file).with_suffix(".html")
    preflight_output(out, "--out")
    data = explorer_data(args.file, metric=args.metric, max_samples=args.max_samples, trust=args.trust_pickle,
                         eval_dirs=args.eval_dir or ())
    written = _write_page(args.file, out, data)
    note = data.summary["partial"]  # the file is read once
    if note:
        print(f"note: {note}: the page shows what is there and says so")
    print(f"wrote {written} ({written.stat().st_size / 1e6:.2f} MB); open it in a browser")
    return 0


if __name__ == "__main__":
    from .cli import run_main

    run_main(main)
