"""The lens explorer's page: HTML, CSS and the script that draws it (see :mod:`model_inspector.explore`).

``PAGE`` holds two placeholders: ``__TITLE__`` (HTML-escaped text) and ``__DATA__`` (the JSON of
:meth:`~model_inspector.explore.ExplorerData.payload`, escaped by :func:`~model_inspector.explore.safe_json`),
which sits in a ``<script type="application/json">`` block that the browser never runs. The script builds every
node with ``createElement`` / ``createElementNS`` and sets text with ``textContent`` and attributes with
``setAttribute``: no data string is ever parsed as HTML.
"""

from __future__ import annotations

__all__ = ["PAGE", "SCRIPT", "STYLE"]

STYLE = r"""
*{box-sizing:border-box}
body{font:13px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2430;background:#f4f5f7}
header{background:#1d2430;color:#fff;padding:10px 16px}header h1{font-size:17px;margin:0;overflow-wrap:anywhere}
header .sub{opacity:.8;font-size:12px;overflow-wrap:anywhere}
.bar{display:flex;flex-wrap:wrap;gap:6px 16px;align-items:center;padding:8px 16px;background:#fff;border-bottom:1px solid #dde1e7}
.bar label{font-size:12px;color:#4a5568;white-space:nowrap}select,input,button{font:inherit;padding:2px 4px;max-width:100%}
select{max-width:16em}#count{font-size:12px;color:#4a5568}
.warn{flex-basis:100%;background:#fff6d6;border:1px solid #ecd98b;border-radius:4px;padding:3px 8px;font-size:12px}
main{display:grid;grid-template-columns:minmax(0,1fr);gap:12px;padding:12px 16px;align-items:start}
@media (min-width:900px){main{grid-template-columns:minmax(0,1fr) minmax(0,1fr)}}
section{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:10px 12px;min-width:0}
section h2{font-size:14px;margin:0 0 6px}.wide{grid-column:1/-1}
.plot{width:100%;min-height:120px}.plot svg{display:block}
svg text{font-size:11px;fill:#333;font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
.axis line{stroke:#888}.axis line.gridline{stroke:#e8ebef}
circle.pt{cursor:pointer;stroke:#fff;stroke-width:.6}circle.pt.dim{fill:#c3c9d2;opacity:.35;pointer-events:none}
circle.pt.sel{stroke:#000;stroke-width:2}
.legend{display:flex;flex-wrap:wrap;gap:2px 12px;font-size:12px;margin:4px 0}.legend span{white-space:nowrap}
.sw{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px;vertical-align:-1px}
#tip{position:fixed;pointer-events:none;background:#1d2430;color:#fff;padding:6px 8px;border-radius:4px;max-width:min(440px,90vw);
font-size:12px;display:none;z-index:10;white-space:pre-wrap;overflow-wrap:anywhere}
.scroll{overflow:auto;max-width:100%}
#gridbox{max-height:70vh}#colorbar{display:flex;flex-wrap:wrap;align-items:center;gap:0 10px}
#grid{border-collapse:collapse;font:11px/1.2 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
#grid td{min-width:30px;max-width:76px;height:22px;padding:0 3px;text-align:center;overflow:hidden;text-overflow:ellipsis;
white-space:nowrap;border:1px solid #fff}
#grid tbody th{font-weight:normal;padding:0 6px;text-align:right;white-space:nowrap;max-width:14em;overflow:hidden;
text-overflow:ellipsis;position:sticky;left:0;background:#fff;z-index:1}
#grid thead th{font-weight:normal;text-align:center;color:#555;font-size:10px;padding:0 2px;position:sticky;background:#fff}
#grid thead tr.layer th{top:0}#grid thead tr.depth th{top:14px;color:#888}
#grid thead th.corner{text-align:right;left:0;z-index:2}
.pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#f3f4f6;border-radius:4px;padding:6px;max-height:160px;overflow:auto;font-size:12px}
.note{color:#5a6577;font-size:11px;margin:4px 0}
table.kv{border-collapse:collapse}table.kv td{padding:1px 10px 1px 0;vertical-align:top;overflow-wrap:anywhere}
table.kv td:first-child{color:#5a6577;min-width:7em;max-width:16em}
table.ev{border-collapse:collapse;font-size:11px;margin:2px 0 10px}
table.ev td,table.ev th{border:1px solid #e2e6ea;padding:2px 5px;text-align:right;white-space:nowrap}
table.ev th{background:#f3f4f6;position:sticky;top:0}.evbox{max-height:320px}
"""

BODY = r"""
<header><h1 id="title"></h1><div class="sub" id="subtitle"></div></header>
<div class="bar" id="bar">
<label>metric <select id="metric"></select></label>
<label>colour by <select id="label"></select></label>
<label>class <select id="class"></select></label>
<label>search prompts <input id="search" type="search" placeholder="text in the prompt" size="18"></label>
<span id="count"></span><div class="warn" id="partial" hidden></div><div class="warn" id="colnote" hidden></div></div>
<main>
<section><h2 id="ptitle">Class-mean profiles</h2><div class="plot" id="profiles"></div><div class="legend" id="plegend"></div>
<p class="note" id="pnote"></p></section>
<section><h2>Samples <select id="embkind"></select></h2><div class="plot" id="emb"></div><div class="legend" id="elegend"></div>
<p class="note">One point per sample (its mean profile over the steps). Hover: prompt and generated text; click: the sample.</p>
</section>
<section><h2 id="dtitle">Expansion and pruning</h2><div class="plot" id="strat"></div><div class="legend" id="dlegend"></div>
<div class="scroll"><table class="ev" id="dtable"></table></div><p class="note" id="dnote"></p></section>
<section><h2>Evaluation</h2><div id="evaluation"></div></section>
<section class="wide" id="sample"><h2 id="stitle">Sample</h2>
<div class="bar" style="padding:0 0 6px;border:0"><button id="prev" type="button">&#8592; previous</button>
<button id="next" type="button">next &#8594;</button><span class="note" id="slabel"></span></div>
<div id="colorbar"></div><p class="note" id="topnote"></p>
<div class="scroll" id="gridbox"><table id="grid"></table></div>
<p class="note" id="gridnote"></p>
<div><b>Prompt</b><div class="pre" id="sprompt"></div><b>Generated</b><div class="pre" id="stext"></div></div>
</section>
<section><h2>Run</h2><div id="summary"></div></section>
</main><div id="tip"></div>
"""

SCRIPT = r"""
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const $ = id => document.getElementById(id);
const SVGNS = "http://www.w3.org/2000/svg", NONE = 65535;
function put(e, attrs, kids) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") e.textContent = String(v); else if (k === "cls") e.setAttribute("class", v); else e.setAttribute(k, String(v));
  }
  for (const k of kids) if (k !== null && k !== undefined) e.append(k);
  return e;
}
const el = (tag, attrs, ...kids) => put(document.createElement(tag), attrs, kids);
const sv = (tag, attrs, ...kids) => put(document.createElementNS(SVGNS, tag), attrs, kids);
function decode(b64, Type) { const s = atob(b64), b = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) b[i] = s.charCodeAt(i); return new Type(b.buffer); }
const N = D.N, T = D.T, L = D.L, S = D.summary, WINDOWS = !!S.windows;
const METRICS = D.metrics.map(m => ({...m, q: decode(m.data, Uint16Array), mean: null}));
const TOP = D.top ? decode(D.top, Uint16Array) : null, TOPP = D.topP ? decode(D.topP, Uint8Array) : null;
const TOK = D.tokens ? decode(D.tokens, Uint16Array) : null;
const TABLEAU = ["#4e79a7","#f28e2b","#e15759","#76b7b2","#59a14f","#edc948","#b07aa1","#ff9da7","#9c755f","#79706e"];
const KELLY = ["#0067a5","#f38400","#be0032","#008856","#875692","#f3c300","#a1caf1","#e68fac","#604e97","#882d17",
  "#8db600","#2b3d26","#f99379","#c2b280","#654522","#b3446c","#dcd300","#e25822","#222222","#f6a600"];
const MAXC = KELLY.length, GREY = "#60708a";
const FONT = "11px " + getComputedStyle(document.body).fontFamily;
const ctx = document.createElement("canvas").getContext("2d");
function measure(s) { ctx.font = FONT; return ctx.measureText(String(s)).width; }
const LABELS = D.labels.map(lab => {
  const cls = [...new Set(lab.values)].sort((a, b) => (a === "(none)") - (b === "(none)") || (a < b ? -1 : a > b ? 1 : 0));
  const idx = new Map(cls.map((c, k) => [c, k]));
  return {name: lab.name, values: lab.values, classes: cls, of: Int32Array.from(lab.values, v => idx.get(v))};
});
const dl = LABELS.findIndex(l => l.name === D.defaultLabel);
const state = {m: 0, lab: dl, cls: -1, q: "", emb: 0, sel: -1};
const vis = new Uint8Array(N).fill(1);
const lab = () => state.lab >= 0 ? LABELS[state.lab] : null;
const coloured = () => !!lab() && lab().classes.length <= MAXC;
const SEMANTIC = new Map([["correct", "#59a14f"], ["incorrect", "#e15759"], ["(none)", "#9aa3ae"]]);
function colorOf(k) { const l = lab(), n = l.classes.length;
  if (l.name === "correct" && l.classes.every(c => SEMANTIC.has(c))) return SEMANTIC.get(l.classes[k]);
  return n <= TABLEAU.length ? TABLEAU[k] : KELLY[k]; }
function val(M, i, t, l) { const q = M.q[(i * T + t) * L + l]; return q === NONE ? NaN : M.lo + q * M.scale; }
function meanOf(M) { if (M.mean) return M.mean; const out = new Float64Array(N * L);
  for (let i = 0; i < N; i++) for (let l = 0; l < L; l++) { let s = 0, c = 0;
    for (let t = 0; t < T; t++) { const v = val(M, i, t, l); if (!isNaN(v)) { s += v; c++; } } out[i * L + l] = c ? s / c : NaN; }
  return (M.mean = out); }
function unitOf(M) { return M.unit ? M.name + " [" + M.unit + "]" : M.name + " (unit not recorded)"; }
function tokStr(k) { return k === NONE || k === undefined || k >= D.vocab.length ? null : D.vocab[k]; }
function show(s) { if (s === null) return "·"; if (s === "") return "∅";
  return s.replace(/ /g, "␣").replace(/\n/g, "↵").replace(/\t/g, "⇥").replace(/\r/g, "␍")
    .replace(/[\u0000-\u001f\u007f\u2028\u2029]/g, c => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0")); }
function viridis(x) { const c = [[68,1,84],[59,82,139],[33,145,140],[94,201,98],[253,231,37]];
  x = Math.max(0, Math.min(1, x)) * 4; const i = Math.min(3, Math.floor(x)), f = x - i;
  return "rgb(" + c[i].map((v, j) => Math.round(v + f * (c[i + 1][j] - v))).join(",") + ")"; }
function nice(lo, hi, n) {
  if (!isFinite(lo) || !isFinite(hi)) { lo = 0; hi = 1; } if (hi - lo < 1e-12) { lo -= 0.5; hi += 0.5; }
  const raw = (hi - lo) / Math.max(1, n), mag = Math.pow(10, Math.floor(Math.log10(raw))), r = raw / mag;
  const step = (r < 1.5 ? 1 : r < 3 ? 2 : r < 7 ? 5 : 10) * mag;
  const a = Math.floor(lo / step + 1e-9), b = Math.ceil(hi / step - 1e-9), ticks = [];
  for (let k = a; k <= b; k++) ticks.push(k * step);
  return {lo: a * step, hi: b * step, step, ticks}; }
function fmt(v, step) { const d = Math.max(0, -Math.floor(Math.log10(step) + 1e-9)); const s = v.toFixed(d);
  return /^-0(\.0*)?$/.test(s) ? s.slice(1) : s; }
function fit(s, px) { s = String(s); if (measure(s) <= px) return s; let k = s.length;
  while (k > 1 && measure(s.slice(0, k) + "…") > px) k--; return s.slice(0, k) + "…"; }
function frame(W, H, xs, ys, xl, yl) {
  const xlab = xs.ticks.map(v => fmt(v, xs.step)), ylab = ys.ticks.map(v => fmt(v, ys.step));
  const left = 22 + Math.max(...ylab.map(measure)) + 6, right = Math.max(10, measure(xlab[xlab.length - 1]) / 2 + 4);
  const top = 10, bottom = 42, pw = W - left - right, ph = H - top - bottom;
  const X = x => left + (x - xs.lo) / (xs.hi - xs.lo) * pw, Y = y => top + ph - (y - ys.lo) / (ys.hi - ys.lo) * ph;
  const svg = sv("svg", {width: W, height: H, viewBox: "0 0 " + W + " " + H});
  const g = sv("g", {cls: "axis"});
  ys.ticks.forEach((v, k) => { g.append(sv("line", {cls: "gridline", x1: left, x2: left + pw, y1: Y(v), y2: Y(v)}),
    sv("text", {cls: "tick y", x: left - 5, y: Y(v) + 4, "text-anchor": "end", text: ylab[k]})); });
  xs.ticks.forEach((v, k) => { g.append(sv("line", {x1: X(v), x2: X(v), y1: top + ph, y2: top + ph + 4}),
    sv("text", {cls: "tick x", x: X(v), y: top + ph + 16, "text-anchor": "middle", text: xlab[k]})); });
  g.append(sv("line", {x1: left, x2: left + pw, y1: top + ph, y2: top + ph}), sv("line", {x1: left, x2: left, y1: top, y2: top + ph}),
    sv("text", {x: left + pw / 2, y: H - 6, "text-anchor": "middle"}, fit(xl, pw), sv("title", {text: xl})),
    sv("text", {transform: "translate(13," + (top + ph / 2) + ") rotate(-90)", "text-anchor": "middle"}, fit(yl, ph), sv("title", {text: yl})));
  svg.append(g);
  return {svg, X, Y};
}
function swatch(colour, text) { return el("span", {}, el("i", {cls: "sw", style: "background:" + colour}), text); }
function counts() { const c = new Map(); if (!lab()) return c;
  for (let i = 0; i < N; i++) if (vis[i]) { const k = lab().of[i]; c.set(k, (c.get(k) || 0) + 1); } return c; }
function nVisible() { let n = 0; for (let i = 0; i < N; i++) n += vis[i]; return n; }

function summary() {
  $("title").textContent = "Entropy-Lens explorer: " + S.file;
  if (S.partial) { $("partial").hidden = false; $("partial").textContent = "Not a finished run: " + S.partial + "."; }
  $("subtitle").textContent = S.model + " · " + S.shape_text + " · " + S.decoding;
  const rows = [["model", S.model + (S.model_fingerprint ? " (fingerprint " + S.model_fingerprint + ")" : "")],
    ["dataset", S.dataset], [WINDOWS ? "prompts" : "samples", S.samples + (S.shown < S.samples ? " (" + S.shown +
    " shown, evenly subsampled)" : "")], ["shape", S.shape_text], ["decoding", S.decoding]];
  for (const [k, v] of Object.entries(S.settings || {})) rows.push([k, v]);
  for (const M of METRICS) rows.push(["metric " + M.name, M.definition || "(definition not recorded)"]);
  rows.push(["complete", S.complete], ["created", S.created], ["file format", S.format_version]);
  $("summary").replaceChildren(el("table", {cls: "kv"}, ...rows.filter(r => r[1] !== null && r[1] !== undefined)
    .map(r => el("tr", {}, el("td", {text: r[0]}), el("td", {text: r[1]})))));
  const box = $("evaluation"), num = v => Number.isInteger(v) ? String(v) : Math.abs(v) >= 1e-3 ? String(+v.toFixed(4)) : v.toExponential(2);
  for (const ev of D.evaluations) {
    box.append(el("div", {cls: "note", text: ev.name}));
    if (ev.note) box.append(el("p", {text: ev.note}));
    if (!ev.rows.length) continue;
    box.append(el("div", {cls: "scroll evbox"}, el("table", {cls: "ev"}, el("thead", {}, el("tr", {}, ...ev.columns.map(c => el("th", {text: c})))),
      el("tbody", {}, ...ev.rows.map(r => el("tr", {}, ...(Array.isArray(r) ? r : []).map(v =>
        el("td", {text: v === null ? "" : typeof v === "number" ? num(v) : String(v)}))))))));
  }
  if (!D.evaluations.length) box.append(el("p", {cls: "note", text: "No evaluation beside this file " +
    "(run entropy-lens evaluate on it, or run_tests.py)."}));
}
function option(text, value) { const o = document.createElement("option"); o.textContent = text; o.value = String(value); return o; }
function controls() {
  $("metric").replaceChildren(...METRICS.map((M, k) => option(M.name, k)));
  $("label").replaceChildren(option("none", -1), ...LABELS.map((l, k) => option(l.name + " (" + l.classes.length + ")", k)));
  $("label").value = String(state.lab);
  $("embkind").replaceChildren(...D.emb.map((e, k) => option(e.name, k)));
  fillClasses();
  $("metric").addEventListener("change", e => { state.m = +e.target.value; draw(); if (state.sel >= 0) openSample(state.sel); });
  $("label").addEventListener("change", e => { state.lab = +e.target.value; state.cls = -1; fillClasses(); draw(); });
  $("class").addEventListener("change", e => { state.cls = +e.target.value; draw(); });
  $("search").addEventListener("input", e => { state.q = e.target.value.toLowerCase(); draw(); });
  $("embkind").addEventListener("change", e => { state.emb = +e.target.value; drawEmb(); });
  $("prev").addEventListener("click", () => step(-1)); $("next").addEventListener("click", () => step(1));
  const E = $("emb");
  E.addEventListener("mouseover", e => { const i = pointOf(e); if (i >= 0) tip(e, i); });
  E.addEventListener("mousemove", e => { if (pointOf(e) >= 0) move(e); });
  E.addEventListener("mouseout", e => { if (pointOf(e) >= 0) $("tip").style.display = "none"; });
  E.addEventListener("click", e => { const i = pointOf(e); if (i >= 0) openSample(i); });
  let pending = 0; addEventListener("resize", () => { cancelAnimationFrame(pending); pending = requestAnimationFrame(() => { drawProfiles(); drawStrategies(); drawEmb(); }); });
}
function pointOf(e) { const c = e.target; return c && c.classList && c.classList.contains("pt") ? +c.getAttribute("data-i") : -1; }
function fillClasses() { $("class").replaceChildren(option("all", -1), ...(lab() ? lab().classes.map((c, k) => option(c, k)) : [])); }
function filter() { for (let i = 0; i < N; i++)
  vis[i] = (state.cls < 0 || (lab() && lab().of[i] === state.cls)) && (!state.q || D.prompts[i].toLowerCase().includes(state.q)) ? 1 : 0; }
function drawProfiles() {
  const box = $("profiles"), W = Math.max(260, box.clientWidth), H = 300, M = METRICS[state.m], mean = meanOf(M);
  const groups = new Map(), byClass = coloured();
  for (let i = 0; i < N; i++) if (vis[i]) { const k = byClass ? lab().of[i] : -1; if (!groups.has(k)) groups.set(k, []); groups.get(k).push(i); }
  const stats = []; let lo = Infinity, hi = -Infinity;
  for (const [k, rows] of [...groups].sort((a, b) => a[0] - b[0])) { const mu = [], sd = [];
    for (let l = 0; l < L; l++) { let s = 0, s2 = 0, c = 0;
      for (const i of rows) { const v = mean[i * L + l]; if (!isNaN(v)) { s += v; s2 += v * v; c++; } }
      const m = c ? s / c : NaN, d = c ? Math.sqrt(Math.max(0, s2 / c - m * m)) : NaN; mu.push(m); sd.push(d);
      if (c) { lo = Math.min(lo, m - d); hi = Math.max(hi, m + d); } }
    stats.push({k, mu, sd, n: rows.length, colour: k >= 0 ? colorOf(k) : GREY, name: k >= 0 ? lab().classes[k] : "all shown samples"}); }
  $("ptitle").textContent = "Class-mean profiles: " + M.name;
  if (!stats.length) { box.replaceChildren(el("p", {cls: "note", text: "No sample matches the filter and search."}));
    $("plegend").replaceChildren(); return; }
  const xs = nice(0, 1, Math.max(2, Math.floor(W / 90))), ys = nice(lo, hi, 5);
  const f = frame(W, H, xs, ys, "relative depth (layer / " + L + ")", unitOf(M));
  for (const s of stats) {
    const pts = s.mu.map((m, l) => [f.X((l + 1) / L), m, s.sd[l]]).filter(p => !isNaN(p[1]));
    const up = pts.map(p => p[0].toFixed(1) + "," + f.Y(p[1] + p[2]).toFixed(1)), dn = pts.map(p => p[0].toFixed(1) + "," + f.Y(p[1] - p[2]).toFixed(1)).reverse();
    f.svg.append(sv("polygon", {points: up.concat(dn).join(" "), fill: s.colour, opacity: 0.14}),
      sv("polyline", {cls: "cls", fill: "none", stroke: s.colour, "stroke-width": 2, points: pts.map(p => p[0].toFixed(1) + "," + f.Y(p[1]).toFixed(1)).join(" ")},
        sv("title", {text: s.name + " (n=" + s.n + ")"})));
  }
  box.replaceChildren(f.svg);
  $("plegend").replaceChildren(...stats.map(s => swatch(s.colour, s.name + " (n=" + s.n + ")")));
  $("pnote").textContent = "Line: mean over the shown samples of each sample's mean over its " + (WINDOWS ? "windows" : "generated tokens") +
    "; band: ±1 std across samples; x: layer k of " + L + " at k / " + L + ".";
}
function drawStrategies() {
  // dH between consecutive layers (H_l - H_(l-1)) of each shown sample's mean profile, then its class mean and std:
  // expansion where the mean is most positive, pruning where most negative (claim i of Entropy-Lens v3)
  const box = $("strat"), W = Math.max(260, box.clientWidth), H = 260, M = METRICS[state.m], mean = meanOf(M);
  const groups = new Map(), byClass = coloured();
  for (let i = 0; i < N; i++) if (vis[i]) { const k = byClass ? lab().of[i] : -1; if (!groups.has(k)) groups.set(k, []); groups.get(k).push(i); }
  $("dtitle").textContent = "Expansion and pruning: Δ " + M.name + " between consecutive layers";
  if (L < 2 || !groups.size) { box.replaceChildren(el("p", {cls: "note", text: L < 2 ? "One layer: no differences." :
    "No sample matches the filter and search."})); $("dlegend").replaceChildren(); $("dtable").replaceChildren(); return; }
  const stats = []; let lo = 0, hi = 0;
  for (const [k, rows] of [...groups].sort((a, b) => a[0] - b[0])) { const mu = [], sd = [];
    for (let l = 1; l < L; l++) { let s = 0, s2 = 0, c = 0;
      for (const i of rows) { const d = mean[i * L + l] - mean[i * L + l - 1]; if (!isNaN(d)) { s += d; s2 += d * d; c++; } }
      const m = c ? s / c : NaN, v = c ? Math.sqrt(Math.max(0, s2 / c - m * m)) : NaN; mu.push(m); sd.push(v);
      if (c) { lo = Math.min(lo, m - v); hi = Math.max(hi, m + v); } }
    const best = (sign, from, to) => { let at = -1; for (let j = from; j < to; j++) if (!isNaN(mu[j]) && sign * mu[j] > 0 &&
      (at < 0 || sign * mu[j] > sign * mu[at])) at = j; return at; };
    stats.push({k, mu, sd, n: rows.length, colour: k >= 0 ? colorOf(k) : GREY, name: k >= 0 ? lab().classes[k] : "all shown samples",
      exp: best(1, 0, L - 1), pru: best(-1, 0, L - 1), expIn: best(1, 1, L - 2), pruIn: best(-1, 1, L - 2)}); }
  const xs = nice(0, 1, Math.max(2, Math.floor(W / 90))), ys = nice(lo, hi, 5);
  const f = frame(W, H, xs, ys, "relative depth of the layer a transition ends at (layer / " + L + ")", "Δ " + unitOf(M));
  f.svg.append(sv("line", {x1: f.X(xs.lo), x2: f.X(xs.hi), y1: f.Y(0), y2: f.Y(0), stroke: "#333", "stroke-dasharray": "4 3"}));
  for (const s of stats) {
    const pts = s.mu.map((m, j) => [f.X((j + 2) / L), m, s.sd[j]]).filter(p => !isNaN(p[1]));
    const up = pts.map(p => p[0].toFixed(1) + "," + f.Y(p[1] + p[2]).toFixed(1)), dn = pts.map(p => p[0].toFixed(1) + "," + f.Y(p[1] - p[2]).toFixed(1)).reverse();
    f.svg.append(sv("polygon", {points: up.concat(dn).join(" "), fill: s.colour, opacity: 0.12}),
      sv("polyline", {fill: "none", stroke: s.colour, "stroke-width": 2, points: pts.map(p => p[0].toFixed(1) + "," + f.Y(p[1]).toFixed(1)).join(" ")},
        sv("title", {text: s.name + " (n=" + s.n + ")"})));
    for (const [j, shape] of [[s.exp, "▲"], [s.pru, "▼"]]) if (j >= 0) f.svg.append(sv("text", {x: f.X((j + 2) / L), y: f.Y(s.mu[j]) + 4,
      "text-anchor": "middle", fill: s.colour, text: shape}, sv("title", {text: s.name + ": " + (shape === "▲" ? "top expansion" : "top pruning") +
      " at layer " + (j + 2) + ", mean Δ " + M.name + " " + s.mu[j].toFixed(3)})));
  }
  box.replaceChildren(f.svg);
  $("dlegend").replaceChildren(...stats.map(s => swatch(s.colour, s.name + " (n=" + s.n + ")")), el("span", {text: "▲ top expansion  ▼ top pruning"}));
  const u = M.unit ? " " + M.unit : "", cell = (s, j) => j < 0 ? "none" : "layer " + (j + 2) + " (depth " + ((j + 2) / L).toFixed(2) +
    "): " + (s.mu[j] >= 0 ? "+" : "") + s.mu[j].toFixed(3) + " ± " + s.sd[j].toFixed(3) + u;
  $("dtable").replaceChildren(el("thead", {}, el("tr", {}, ...["class", "n", "top expansion", "top pruning", "expansion, interior",
    "pruning, interior"].map(c => el("th", {text: c})))), el("tbody", {}, ...stats.map(s => el("tr", {}, el("td", {text: s.name}),
    el("td", {text: s.n}), el("td", {text: cell(s, s.exp)}), el("td", {text: cell(s, s.pru)}), el("td", {text: cell(s, s.expIn)}),
    el("td", {text: cell(s, s.pruIn)})))));
  $("dnote").textContent = "Δ " + M.name + " = value at layer l minus layer l-1 of each sample's mean over its " + (WINDOWS ? "windows" :
    "generated tokens") + "; line: class mean, band: ±1 std across samples; interior: without the transitions into the second and " +
    "the last layer. Bootstrap stability and CIs: entropy-lens strategies FILE (its CSV shows below when it sits beside this file).";
}
function drawEmb() {
  const box = $("emb"), W = Math.max(260, box.clientWidth), H = 300, E = D.emb[state.emb], pts = E.points, pca = E.name === "PCA";
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (const [x, y] of pts) { x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y); }
  const px = 0.03 * (x1 - x0), py = 0.04 * (y1 - y0); x0 -= px; x1 += px; y0 -= py; y1 += py;
  const xs = nice(x0, x1, Math.max(2, Math.floor(W / 90))), ys = nice(y0, y1, 5);
  const f = frame(W, H, xs, ys, pca ? "PC1 (" + (100 * D.pcaVar[0]).toFixed(1) + " % of variance)" : "t-SNE 1 (no unit)",
    pca ? "PC2 (" + (100 * D.pcaVar[1]).toFixed(1) + " % of variance)" : "t-SNE 2 (no unit)");
  const dots = sv("g", {}), byClass = coloured();
  const dot = (i, cls, fill) => sv("circle", {cls, "data-i": i, cx: f.X(pts[i][0]).toFixed(1), cy: f.Y(pts[i][1]).toFixed(1), r: 4, fill});
  let hidden = 0;
  for (let i = 0; i < N; i++) if (!vis[i]) { if (i !== state.sel) dots.append(dot(i, "pt dim", "#c3c9d2")); hidden++; }
  const size = counts(), order = [...Array(N).keys()].filter(i => vis[i] && i !== state.sel);
  if (byClass) order.sort((a, b) => size.get(lab().of[b]) - size.get(lab().of[a]) || a - b);  // small classes on top
  for (const i of order) dots.append(dot(i, "pt", byClass ? colorOf(lab().of[i]) : GREY));
  if (state.sel >= 0) dots.append(dot(state.sel, "pt sel" + (vis[state.sel] ? "" : " dim"), byClass ? colorOf(lab().of[state.sel]) : GREY));
  f.svg.append(dots); box.replaceChildren(f.svg);
  const items = byClass ? [...counts()].sort((a, b) => a[0] - b[0]).map(([k, n]) => swatch(colorOf(k), lab().classes[k] + " (n=" + n + ")"))
    : [swatch(GREY, "shown (n=" + nVisible() + ")")];
  if (hidden) items.push(swatch("#c3c9d2", "filtered out (n=" + hidden + ")"));
  $("elegend").replaceChildren(...items);
}
function tip(e, i) { const t = $("tip"), p = D.prompts[i].replace(/\s+/g, " ").trim(), g = D.texts[i].replace(/\s+/g, " ").trim();
  t.textContent = "sample " + (i + 1) + (lab() ? " · " + lab().name + ": " + lab().values[i] : "") + "\n" + p.slice(0, 220) +
    (p.length > 220 ? "…" : "") + "\n→ " + g.slice(0, 160) + (g.length > 160 ? "…" : "");
  t.style.display = "block"; move(e); }
function move(e) { const t = $("tip"); t.style.left = Math.max(4, Math.min(e.clientX + 14, innerWidth - t.offsetWidth - 8)) + "px";
  t.style.top = Math.max(4, Math.min(e.clientY + 14, innerHeight - t.offsetHeight - 8)) + "px"; }
function colorbar(M, lo, hi) {
  const W = Math.max(220, Math.min(420, $("sample").clientWidth - 40)), H = 32, ticks = nice(lo, hi, 5), x = v => 18 + (v - lo) / ((hi - lo) || 1) * (W - 36);
  const grad = sv("linearGradient", {id: "cbgrad"}, ...[...Array(11).keys()].map(k => sv("stop", {offset: k / 10, "stop-color": viridis(k / 10)})));
  const svg = sv("svg", {width: W, height: H, viewBox: "0 0 " + W + " " + H}, sv("defs", {}, grad),
    sv("rect", {x: 18, y: 2, width: W - 36, height: 12, fill: "url(#cbgrad)"}));
  for (const v of ticks.ticks) if (v >= lo - 1e-9 && v <= hi + 1e-9) svg.append(sv("line", {x1: x(v), x2: x(v), y1: 14, y2: 18, stroke: "#666"}),
    sv("text", {cls: "tick x", x: x(v), y: 29, "text-anchor": "middle", text: fmt(v, ticks.step)}));
  $("colorbar").replaceChildren(svg, el("span", {cls: "note", text: "cell colour: " + unitOf(M) + ", one scale for the whole file"}));
}
function openSample(i) {
  state.sel = i; drawEmb();
  const M = METRICS[state.m], lo = M.lo, hi = M.hi, span = (hi - lo) || 1;
  colorbar(M, lo, hi);
  const head1 = el("tr", {cls: "layer"}, el("th", {cls: "corner", text: "layer"})), head2 = el("tr", {cls: "depth"}, el("th", {cls: "corner", text: "depth"}));
  for (let l = 0; l < L; l++) { head1.append(el("th", {text: l + 1, title: "layer " + (l + 1) + " of " + L})); head2.append(el("th", {text: ((l + 1) / L).toFixed(2)})); }
  const body = el("tbody", {});
  for (let t = 0; t < T; t++) {
    const g = TOK ? TOK[i * T + t] : NONE, gs = tokStr(g);
    const wt = S.window_tokens, tokens = wt ? " (tokens " + (t * wt + 1) + "–" + ((t + 1) * wt) + ")" : "";
    const th = el("th", {cls: "gen", "data-id": g, text: WINDOWS ? "window " + (t + 1) : show(gs), title: WINDOWS ? "window " + (t + 1) + " of " + T + tokens :
      "generated token " + (t + 1) + ": " + (gs === null ? "(none: generation stopped or token not recorded)" : JSON.stringify(gs))});
    const tr = el("tr", {}, th);
    for (let l = 0; l < L; l++) { const v = val(M, i, t, l), k = TOP ? TOP[(i * T + t) * L + l] : NONE, s = tokStr(k), x = (v - lo) / span;
      const where = (WINDOWS ? "window " : "step ") + (t + 1) + ", layer " + (l + 1) + " of " + L + " (depth " + ((l + 1) / L).toFixed(2) + "): ";
      const what = M.name + " = " + (isNaN(v) ? "n/a" : v.toFixed(3) + (M.unit ? " " + M.unit : ""));
      const top = TOP ? "; lens top token " + (s === null ? "(not recorded)" : JSON.stringify(s)) + ", p = " + (TOPP[(i * T + t) * L + l] / 255).toFixed(3) : "";
      tr.append(el("td", {"data-id": k, title: where + what + top, text: TOP ? show(s) : "",
        style: "background:" + (isNaN(v) ? "#eee" : viridis(x)) + ";color:" + (x > 0.55 ? "#000" : "#fff")})); }
    body.append(tr); }
  $("grid").replaceChildren(el("thead", {}, head1, head2), body);
  $("stitle").textContent = "Sample " + (i + 1) + " of " + N;
  $("slabel").textContent = LABELS.map(l => l.name + ": " + l.values[i]).join(" | ");
  $("topnote").textContent = S.top_note || "";
  $("gridnote").textContent = "Rows: " + (WINDOWS ? "windows of generated tokens (window means)" : "generated tokens (row label: the token; " +
    "␣ space, ↵ newline, ⇥ tab, · none)") + "; columns: layers (depth = layer / " + L + ")" + (TOP ? "; cell text: the lens's most " +
    "probable token there (hover: the value and its probability)." : ".");
  $("sprompt").textContent = D.prompts[i]; $("stext").textContent = D.texts[i];
}
function step(d) { const v = [...Array(N).keys()].filter(i => vis[i]); if (!v.length) return;
  const at = v.indexOf(state.sel); openSample(v[at < 0 ? 0 : (at + d + v.length) % v.length]); }
function draw() { filter(); const n = nVisible();
  $("count").textContent = n + " of " + N + " samples match";
  const l = lab(), note = $("colnote");
  note.hidden = !(l && !coloured());
  note.textContent = l && !coloured() ? "“" + l.name + "” has " + l.classes.length + " classes, more than the " + MAXC +
    " colours this page tells apart: points are grey and the profile plot shows all samples together. Pick one of its classes " +
    "under “class”, or colour by another label." : "";
  drawProfiles(); drawStrategies(); drawEmb(); }
summary(); controls(); draw(); if (N) openSample(0);
"""

PAGE = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>__TITLE__</title>\n<style>"
        + STYLE + "</style></head><body>" + BODY
        + "<script id=\"data\" type=\"application/json\">__DATA__</script>\n<script>" + SCRIPT + "</script></body></html>\n")
