"""The lens explorer: one self-contained HTML file per run (no network, no CDN: the page draws SVG itself).

``entropy-lens explore FILE [--out report.html]`` (or ``python3 -m model_inspector.explore FILE``) writes a
page with the run summary (model, settings, counts, and the evaluation CSVs that ``run_tests.py`` left beside
the file), class-mean profiles against relative depth (±1 std band) for any metric in the file, a PCA and a
t-SNE of the samples' mean profiles coloured by a label (hover: prompt, generated text, label; click: the
sample), and the sample view: the token x layer grid coloured by the metric with the lens's top token in each
cell (its probability on hover). A filter by label class and a search in the prompts narrow every view.

The arrays travel as base64 typed arrays: metrics quantised to uint16 (resolution: the metric's range / 65535,
about 2e-4 nats for entropies), top-token ids as uint16 indexes into the file's token table, probabilities as
uint8 (1/255). A 2,400-sample TinyStories-sized run gives a file of a few MB.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
from pathlib import Path

import numpy as np

from .errors import UserError

__all__ = ["build_report", "write_report", "main"]

#: Samples kept in one page; a larger file is subsampled evenly (the page says so).
MAX_SAMPLES = 5000
_NAN16 = 65535


def _b64(arr: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(arr).tobytes()).decode("ascii")


def _label_columns(res) -> dict:
    """Per-sample label columns (strings) worth colouring by: few distinct values, or correctness."""
    out = {}
    n = len(res)
    for key in res.label_keys:
        if key in ("input", "text", "model"):
            continue
        values = [str(v) for v in res[key]]
        k = len(set(values))
        if 1 < k <= max(2, min(60, n // 2)):
            out[key] = values
    if "prompt" in out:  # the paper's task class is the first word of the prompt label
        out = {"class": [v.split("_")[0] for v in out["prompt"]], **out}
    return out


def _evaluations(path: Path) -> list:
    """The evaluation CSVs ``run_tests.py`` wrote beside the file (``NAME_tm_overall.csv`` ...)."""
    import pandas as pd

    found = []
    for csv in sorted(path.parent.glob(f"{path.stem}_tm_*.csv")):
        df = pd.read_csv(csv)
        found.append({"name": csv.name, "columns": list(df.columns),
                      "rows": json.loads(df.head(60).to_json(orient="values", double_precision=4))})
    return found


def build_report(path: str | Path, *, metric: str | None = None, max_samples: int = MAX_SAMPLES, seed: int = 42) -> str:
    """The explorer page of results file ``path`` as one HTML string."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    from .results import Results

    path = Path(path)
    res = Results.load(path)
    if not res.metric_keys:
        raise UserError(f"{path} holds no [token, layer] profiles to explore (formats files: use classify_formats.py)")
    n_all = len(res)
    keep = np.arange(n_all)
    if n_all > max_samples:
        keep = np.linspace(0, n_all - 1, max_samples).round().astype(int)
    metrics = res.metric_keys
    main_metric = metric or ("entropy" if "entropy" in metrics else metrics[0])
    if main_metric not in metrics:
        raise UserError(f"no metric {main_metric!r} in {path}; it has {', '.join(metrics)}")
    meta = res.metadata
    strings = {int(k): v for k, v in (meta.get("token_strings") or {}).items()}
    vocab = sorted(strings)
    index = {t: i for i, t in enumerate(vocab)}

    arrays, ranges = {}, {}
    for key in metrics:
        x = res.profiles(key)[keep].astype(np.float64)  # [N, T, L]
        lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
        scale = (hi - lo) / (_NAN16 - 1) or 1.0
        q = np.where(np.isfinite(x), np.round((x - lo) / scale), _NAN16).astype(np.uint16)
        arrays[key], ranges[key] = _b64(q), [lo, scale]
    n, t, n_layers = res.profiles(main_metric)[keep].shape

    def ids_to_index(col):
        a = np.stack([np.asarray(v) for v in res[col]])[keep]
        return np.vectorize(lambda i: index.get(int(i), _NAN16), otypes=[np.uint16])(a) if a.size else a

    top = top_p = None
    if "top_ids" in res and strings:
        top = _b64(ids_to_index("top_ids")[..., 0])
        top_p = _b64((np.stack([np.asarray(v, dtype=np.float32) for v in res["top_probs"]])[keep][..., 0]
                      .clip(0, 1) * 255).round().astype(np.uint8))
    tokens = _b64(ids_to_index("tokens")) if "tokens" in res and strings else None

    mean = np.nanmean(res.profiles(main_metric)[keep].astype(np.float64), axis=1)  # [N, L]
    mean = np.nan_to_num(mean)
    pca = PCA(n_components=2, random_state=seed).fit(mean)
    emb = {"pca": np.round(pca.transform(mean), 4).tolist()}
    if n >= 5:
        perp = min(30.0, max(2.0, (n - 1) / 3))
        emb["tsne"] = np.round(TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed)
                               .fit_transform(mean), 3).tolist()
    ident = meta.get("identity") or {}
    summary = {
        "file": path.name, "model": ident.get("model") or meta.get("model_id") or "?",
        "model_fingerprint": ident.get("model_fingerprint"), "samples": n_all, "shown": int(n),
        "tokens": int(t), "layers": int(n_layers), "dataset": ident.get("dataset") or meta.get("config", {}).get("dataset"),
        "settings": {k: ident.get(k) for k in ("dtype", "device", "max_len", "sample", "temperature", "seed",
                                              "prepend_bos", "chat_template", "batch_size") if k in ident},
        "complete": meta.get("complete"), "created": meta.get("created"), "format_version": meta.get("format_version"),
        "metric_definitions": meta.get("metrics", {}),
    }
    data = {
        "summary": summary, "metrics": metrics, "metric": main_metric, "arrays": arrays, "ranges": ranges,
        "N": int(n), "T": int(t), "L": int(n_layers), "top": top, "topP": top_p, "tokens": tokens,
        "vocab": [strings[i] for i in vocab],
        "labels": {k: [v[i] for i in keep] for k, v in _label_columns(res).items()},
        "prompts": [str(res["input"][i]) for i in keep] if "input" in res else [""] * n,
        "texts": [str(res["text"][i]) for i in keep] if "text" in res else [""] * n,
        "emb": emb, "pcaVar": [round(float(v), 4) for v in pca.explained_variance_ratio_],
        "evaluations": _evaluations(path),
    }
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return _PAGE.replace("__TITLE__", html.escape(f"Entropy-Lens explorer: {path.name}")).replace("__DATA__", payload)


def write_report(path: str | Path, out: str | Path | None = None, **kwargs) -> Path:
    """Write the explorer page of ``path`` to ``out`` (default: ``NAME.html`` beside it); returns its path."""
    from .storage import atomic_write_bytes

    out = Path(out) if out else Path(path).with_suffix(".html")
    atomic_write_bytes(out, build_report(path, **kwargs).encode("utf-8"))
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="entropy-lens explore", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", help="results file (.pkl or .npz from the experiment scripts)")
    p.add_argument("--out", default=None, help="the HTML file to write (default: FILE with .html)")
    p.add_argument("--metric", default=None, help="the metric shown first (default: entropy)")
    p.add_argument("--max_samples", type=int, default=MAX_SAMPLES,
                   help=f"samples in the page; more are subsampled evenly (default: {MAX_SAMPLES})")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .storage import preflight_output

    out = Path(args.out) if args.out else Path(args.file).with_suffix(".html")
    preflight_output(out)
    written = write_report(args.file, out, metric=args.metric, max_samples=args.max_samples)
    print(f"wrote {written} ({written.stat().st_size / 1e6:.2f} MB); open it in a browser")
    return 0


_PAGE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body{font:13px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
header{background:#1d2430;color:#fff;padding:10px 18px}header h1{font-size:17px;margin:0}
header .sub{opacity:.75;font-size:12px}
main{display:grid;grid-template-columns:minmax(420px,1fr) minmax(420px,1fr);gap:12px;padding:12px 18px}
section{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:10px 12px;min-width:0}
section h2{font-size:14px;margin:0 0 6px}.wide{grid-column:1/-1}
.controls{display:flex;flex-wrap:wrap;gap:10px;align-items:center}
.controls label{font-size:12px;color:#4a5568}select,input{font:inherit;padding:2px 4px}
table.kv td{padding:1px 8px 1px 0;vertical-align:top}table.kv td:first-child{color:#5a6577}
table.ev{border-collapse:collapse;font-size:11px;margin:4px 0 10px}table.ev td,table.ev th{border:1px solid #e2e6ea;padding:2px 5px;text-align:right}
svg text{font-size:11px;fill:#333}.axis line,.axis path{stroke:#888}
circle.pt{cursor:pointer;stroke:#fff;stroke-width:.6}circle.pt.dim{opacity:.08}circle.pt.sel{stroke:#000;stroke-width:2}
#tip{position:fixed;pointer-events:none;background:#1d2430;color:#fff;padding:6px 8px;border-radius:4px;max-width:440px;
font-size:12px;display:none;z-index:10;white-space:pre-wrap}
#grid{border-collapse:collapse;font:11px/1.1 ui-monospace,SFMono-Regular,Menlo,monospace}
#grid td{width:34px;height:22px;text-align:center;overflow:hidden;white-space:nowrap;max-width:34px;border:1px solid #fff}
#grid th{font-weight:normal;padding:0 6px;text-align:right;white-space:nowrap;color:#333}
#grid thead th{text-align:center;color:#666;font-size:10px}
.pre{white-space:pre-wrap;background:#f3f4f6;border-radius:4px;padding:6px;max-height:160px;overflow:auto;font-size:12px}
.note{color:#5a6577;font-size:11px}.legend span{display:inline-block;margin-right:10px}
.sw{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:3px;vertical-align:-1px}
</style></head><body>
<header><h1 id="title"></h1><div class="sub" id="subtitle"></div></header>
<main>
<section><h2>Run</h2><div id="summary"></div></section>
<section><h2>Filter</h2><div class="controls">
<label>metric <select id="metric"></select></label>
<label>colour by <select id="label"></select></label>
<label>class <select id="class"><option value="">all</option></select></label>
<label>search prompts <input id="search" placeholder="text in the prompt" size="22"></label></div>
<p class="note" id="count"></p><div class="legend" id="legend"></div></section>
<section><h2 id="ptitle">Class-mean profiles</h2><svg id="profiles" width="100%" viewBox="0 0 560 320"></svg>
<p class="note">x: relative depth (layer + 1) / L; line: class mean of each sample's mean over generated tokens;
band: ±1 std across samples.</p></section>
<section><h2>Samples <select id="embkind"></select></h2><svg id="emb" width="100%" viewBox="0 0 560 320"></svg>
<p class="note" id="embnote">One point per sample (its mean profile). Hover: prompt and generated text; click: the sample.</p></section>
<section class="wide" id="sample"><h2 id="stitle">Sample: click a point</h2>
<div class="controls"><button id="prev">&#8592; previous</button><button id="next">next &#8594;</button>
<span class="note" id="slabel"></span></div>
<div style="overflow:auto"><table id="grid"></table></div>
<p class="note">Rows: generated tokens (row label: the token generated there); columns: layers (relative depth).
Cell colour: the metric; cell text: the lens's most probable token at that layer and step (hover for its probability).</p>
<div><b>Prompt</b><div class="pre" id="sprompt"></div><b>Generated</b><div class="pre" id="stext"></div></div>
</section>
</main><div id="tip"></div>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const $ = id => document.getElementById(id);
function decode(b64, Type) { const s = atob(b64), b = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) b[i] = s.charCodeAt(i); return new Type(b.buffer); }
const ARR = {}; for (const m of D.metrics) ARR[m] = decode(D.arrays[m], Uint16Array);
const TOP = D.top ? decode(D.top, Uint16Array) : null, TOPP = D.topP ? decode(D.topP, Uint8Array) : null;
const TOK = D.tokens ? decode(D.tokens, Uint16Array) : null;
const N = D.N, T = D.T, L = D.L;
const PALETTE = ["#4e79a7","#f28e2b","#e15759","#76b7b2","#59a14f","#edc948","#b07aa1","#ff9da7","#9c755f","#bab0ac"];
function val(m, i, t, l) { const q = ARR[m][(i * T + t) * L + l]; return q === 65535 ? NaN : D.ranges[m][0] + q * D.ranges[m][1]; }
function meanProfile(m, i) { const out = new Array(L).fill(0);
  for (let l = 0; l < L; l++) { let s = 0, c = 0; for (let t = 0; t < T; t++) { const v = val(m, i, t, l); if (!isNaN(v)) { s += v; c++; } }
    out[l] = c ? s / c : NaN; } return out; }
function esc(s) { return String(s).replace(/[&<>"]/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;","\"":"&quot;"}[c])); }
function tokStr(k) { return k === 65535 || k === undefined ? "" : D.vocab[k]; }
function viridis(x) { const c = [[68,1,84],[59,82,139],[33,145,140],[94,201,98],[253,231,37]];
  x = Math.max(0, Math.min(1, x)) * 4; const i = Math.min(3, Math.floor(x)), f = x - i;
  return "rgb(" + c[i].map((v, j) => Math.round(v + f * (c[i + 1][j] - v))).join(",") + ")"; }
let state = {metric: D.metric, label: Object.keys(D.labels)[0] || "", cls: "", q: "", emb: "tsne" in D.emb ? "tsne" : "pca", sel: -1};
const labelOf = i => state.label ? D.labels[state.label][i] : "all";
function classes() { return state.label ? [...new Set(D.labels[state.label])].sort() : ["all"]; }
function colorOf(c) { return PALETTE[classes().indexOf(c) % PALETTE.length]; }
function visible(i) { return (!state.cls || labelOf(i) === state.cls) && (!state.q || D.prompts[i].toLowerCase().includes(state.q)); }

function summary() {
  const s = D.summary; $("title").textContent = "Entropy-Lens explorer: " + s.file;
  $("subtitle").textContent = s.model + " | " + s.samples + " samples x " + s.tokens + " tokens x " + s.layers + " layers";
  const rows = [["model", s.model + (s.model_fingerprint ? " (" + s.model_fingerprint + ")" : "")], ["dataset", s.dataset],
    ["samples", s.samples + (s.shown < s.samples ? " (" + s.shown + " shown, evenly subsampled)" : "")],
    ["complete", s.complete], ["created", s.created]];
  for (const [k, v] of Object.entries(s.settings)) rows.push([k, v]);
  for (const [k, v] of Object.entries(s.metric_definitions)) rows.push([k, v]);
  let h = "<table class='kv'>" + rows.map(r => "<tr><td>" + esc(r[0]) + "</td><td>" + esc(r[1]) + "</td></tr>").join("") + "</table>";
  for (const ev of D.evaluations) { h += "<div class='note'>" + esc(ev.name) + "</div><div style='overflow-x:auto'><table class='ev'><tr>" +
    ev.columns.map(c => "<th>" + esc(c) + "</th>").join("") + "</tr>" + ev.rows.map(r => "<tr>" + r.map(v =>
    "<td>" + esc(typeof v === "number" ? +v.toFixed(4) : v) + "</td>").join("") + "</tr>").join("") + "</table></div>"; }
  if (!D.evaluations.length) h += "<p class='note'>No evaluation beside this file (run run_tests.py / entropy-lens evaluate on it).</p>";
  $("summary").innerHTML = h;
}
function controls() {
  $("metric").innerHTML = D.metrics.map(m => "<option>" + esc(m) + "</option>").join(""); $("metric").value = state.metric;
  const labs = Object.keys(D.labels); $("label").innerHTML = labs.length ? labs.map(k => "<option>" + esc(k) + "</option>").join("") : "<option value=''>none</option>";
  $("label").value = state.label;
  $("embkind").innerHTML = Object.keys(D.emb).map(k => "<option value='" + k + "'>" + (k === "pca" ? "PCA" : "t-SNE") + "</option>").join("");
  $("embkind").value = state.emb;
  fillClasses();
  $("metric").onchange = e => { state.metric = e.target.value; draw(); };
  $("label").onchange = e => { state.label = e.target.value; state.cls = ""; fillClasses(); draw(); };
  $("class").onchange = e => { state.cls = e.target.value; draw(); };
  $("search").oninput = e => { state.q = e.target.value.toLowerCase(); draw(); };
  $("embkind").onchange = e => { state.emb = e.target.value; drawEmb(); };
  $("prev").onclick = () => step(-1); $("next").onclick = () => step(1);
}
function fillClasses() { $("class").innerHTML = "<option value=''>all</option>" + classes().map(c => "<option>" + esc(c) + "</option>").join(""); }
function axes(svg, x0, x1, y0, y1, W, H, P, xl, yl) {
  let h = "<g class='axis'><line x1='" + P + "' y1='" + (H - P) + "' x2='" + (W - 10) + "' y2='" + (H - P) + "'/><line x1='" + P + "' y1='10' x2='" + P + "' y2='" + (H - P) + "'/></g>";
  for (let k = 0; k <= 4; k++) { const xv = x0 + k * (x1 - x0) / 4, yv = y0 + k * (y1 - y0) / 4;
    const X = P + k * (W - 10 - P) / 4, Y = H - P - k * (H - P - 10) / 4;
    h += "<text x='" + X + "' y='" + (H - P + 14) + "' text-anchor='middle'>" + (+xv.toFixed(2)) + "</text>";
    h += "<text x='" + (P - 4) + "' y='" + (Y + 4) + "' text-anchor='end'>" + (+yv.toFixed(2)) + "</text>"; }
  h += "<text x='" + ((W + P) / 2) + "' y='" + (H - 4) + "' text-anchor='middle'>" + esc(xl) + "</text>";
  h += "<text transform='translate(12," + ((H - P) / 2) + ") rotate(-90)' text-anchor='middle'>" + esc(yl) + "</text>";
  return h;
}
function drawProfiles() {
  const W = 560, H = 320, P = 46, cls = classes(), rel = [...Array(L).keys()].map(l => (l + 1) / L);
  const stats = []; let lo = Infinity, hi = -Infinity;
  for (const c of cls) { const rows = []; for (let i = 0; i < N; i++) if (visible(i) && labelOf(i) === c) rows.push(meanProfile(state.metric, i));
    if (!rows.length) continue; const mu = [], sd = [];
    for (let l = 0; l < L; l++) { const v = rows.map(r => r[l]).filter(x => !isNaN(x)), m = v.reduce((a, b) => a + b, 0) / v.length;
      mu.push(m); sd.push(Math.sqrt(v.reduce((a, b) => a + (b - m) * (b - m), 0) / v.length)); lo = Math.min(lo, m - sd[l]); hi = Math.max(hi, m + sd[l]); }
    stats.push({c, mu, sd, n: rows.length}); }
  if (!stats.length) { $("profiles").innerHTML = "<text x='200' y='160'>no sample matches the filter</text>"; return; }
  if (hi - lo < 1e-9) { hi += 0.5; lo -= 0.5; }
  const X = x => P + x * (W - 10 - P), Y = y => H - P - (y - lo) / (hi - lo) * (H - P - 10);
  let h = axes(null, 0, 1, lo, hi, W, H, P, "relative depth (layer + 1) / L", state.metric + (D.summary.metric_definitions[state.metric] || "").replace(/^.*(\[[^\]]*\])$/, " $1"));
  for (const s of stats) { const col = colorOf(s.c);
    const up = rel.map((x, l) => X(x) + "," + Y(s.mu[l] + s.sd[l])), dn = rel.map((x, l) => X(x) + "," + Y(s.mu[l] - s.sd[l])).reverse();
    h += "<polygon points='" + up.concat(dn).join(" ") + "' fill='" + col + "' opacity='0.15'/>";
    h += "<polyline class='cls' fill='none' stroke='" + col + "' stroke-width='2' points='" + rel.map((x, l) => X(x) + "," + Y(s.mu[l])).join(" ") + "'><title>" + esc(s.c) + " (n=" + s.n + ")</title></polyline>"; }
  $("profiles").innerHTML = h;
  $("legend").innerHTML = stats.map(s => "<span><i class='sw' style='background:" + colorOf(s.c) + "'></i>" + esc(s.c) + " (n=" + s.n + ")</span>").join("");
}
function drawEmb() {
  const W = 560, H = 320, P = 46, pts = D.emb[state.emb];
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (const [x, y] of pts) { x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y); }
  if (x1 - x0 < 1e-9) x1 = x0 + 1; if (y1 - y0 < 1e-9) y1 = y0 + 1;
  const X = x => P + (x - x0) / (x1 - x0) * (W - 20 - P), Y = y => H - P - (y - y0) / (y1 - y0) * (H - P - 20);
  const xl = state.emb === "pca" ? "PC1 (" + (100 * D.pcaVar[0]).toFixed(1) + " % of variance)" : "t-SNE 1 (no unit)";
  const yl = state.emb === "pca" ? "PC2 (" + (100 * D.pcaVar[1]).toFixed(1) + " % of variance)" : "t-SNE 2 (no unit)";
  let h = axes(null, x0, x1, y0, y1, W, H, P, xl, yl);
  for (let i = 0; i < N; i++) h += "<circle class='pt" + (visible(i) ? "" : " dim") + (i === state.sel ? " sel" : "") + "' data-i='" + i +
    "' cx='" + X(pts[i][0]).toFixed(1) + "' cy='" + Y(pts[i][1]).toFixed(1) + "' r='4' fill='" + colorOf(labelOf(i)) + "'/>";
  $("emb").innerHTML = h;
  for (const c of $("emb").querySelectorAll("circle.pt")) {
    const i = +c.dataset.i;
    c.onmouseenter = e => tip(e, D.prompts[i].slice(0, 220) + (D.prompts[i].length > 220 ? "…" : "") + "\n→ " + D.texts[i].slice(0, 160) +
      "\n" + (state.label ? state.label + ": " + labelOf(i) : ""));
    c.onmousemove = e => move(e); c.onmouseleave = () => $("tip").style.display = "none";
    c.onclick = () => openSample(i);
  }
}
function tip(e, text) { const t = $("tip"); t.textContent = text; t.style.display = "block"; move(e); }
function move(e) { const t = $("tip"); t.style.left = Math.min(e.clientX + 14, innerWidth - 460) + "px"; t.style.top = (e.clientY + 14) + "px"; }
function openSample(i) {
  state.sel = i; drawEmb();
  const m = state.metric; let lo = Infinity, hi = -Infinity;
  for (let t = 0; t < T; t++) for (let l = 0; l < L; l++) { const v = val(m, i, t, l); if (!isNaN(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); } }
  let h = "<thead><tr><th>token \\ layer</th>" + [...Array(L).keys()].map(l => "<th title='layer " + l + "'>" + ((l + 1) / L).toFixed(2) + "</th>").join("") + "</tr></thead><tbody>";
  for (let t = 0; t < T; t++) {
    const g = TOK ? TOK[i * T + t] : 65535;
    h += "<tr><th class='gen' data-id='" + g + "'>" + esc(JSON.stringify(tokStr(g)).slice(1, -1) || "·") + "</th>";
    for (let l = 0; l < L; l++) { const v = val(m, i, t, l), k = TOP ? TOP[(i * T + t) * L + l] : 65535, p = TOPP ? TOPP[(i * T + t) * L + l] / 255 : NaN;
      const x = (v - lo) / ((hi - lo) || 1), s = tokStr(k);
      h += "<td data-id='" + k + "' style='background:" + (isNaN(v) ? "#eee" : viridis(x)) + ";color:" + (x > 0.6 ? "#000" : "#fff") +
        "' title='token " + t + ", layer " + l + " (depth " + ((l + 1) / L).toFixed(2) + "): " + esc(m) + " = " + (isNaN(v) ? "n/a" : v.toFixed(3)) +
        (TOP ? "; top token " + esc(JSON.stringify(s)) + " p = " + p.toFixed(3) : "") + "'>" + esc(s.trim().slice(0, 5)) + "</td>"; }
    h += "</tr>"; }
  $("grid").innerHTML = h + "</tbody>";
  $("stitle").textContent = "Sample " + i + " of " + N;
  $("slabel").textContent = Object.keys(D.labels).map(k => k + ": " + D.labels[k][i]).join(" | ") +
    " | colour: " + m + " from " + lo.toFixed(2) + " (dark) to " + hi.toFixed(2) + " (light)";
  $("sprompt").textContent = D.prompts[i]; $("stext").textContent = D.texts[i];
}
function step(d) { const vis = [...Array(N).keys()].filter(visible); if (!vis.length) return;
  const at = vis.indexOf(state.sel); openSample(vis[(at + d + vis.length) % vis.length]); }
function draw() { const n = [...Array(N).keys()].filter(visible).length;
  $("count").textContent = n + " of " + N + " samples match"; $("ptitle").textContent = "Class-mean profiles: " + state.metric;
  drawProfiles(); drawEmb(); }
summary(); controls(); draw();
</script></body></html>
"""

if __name__ == "__main__":
    from .cli import run_main

    run_main(main)
