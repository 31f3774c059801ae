"""The lens precision (``lens_precision``): fp32 unchanged, the bf16 forms' accuracy and kernels, the head cast
once, the fallback where a device has no bf16 product, the measured deviation, the option and the GPU script's dry
run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import run_script

from model_inspector import lens_precision as lp
from model_inspector.errors import UserError
from model_inspector.inspector import ModelInspector
from model_inspector.lens import LogitLens
from model_inspector.metrics import chunk_size_for, stream_metrics
from model_inspector.testing import tiny_model

ROOT = Path(__file__).resolve().parents[1]
METRICS = ["shannon", "renyi:0.5", "renyi:5", "kl_final"]


@pytest.fixture
def bf16_here(monkeypatch):
    """Declare the CPU bf16-capable, so that the bf16 arithmetic (which torch runs on any CPU, natively or
    emulated) is tested on every machine; the fallback itself is tested separately."""
    monkeypatch.setattr(lp, "_bf16_reason", lambda device: None)


def _resid(lens, *lead, scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*lead, lens.n_layers, lens.d_model, generator=g) * scale


def test_fp32_default_is_the_plain_fp32_product_bit_for_bit():
    """The default lens equals, bit for bit, the streamed metrics of plain float32 ``torch.mm`` chunks (the
    computation before the option existed), and an explicit ``fp32`` is the default."""
    for arch in ("llama", "gemma2"):  # gemma2: a logit transform (soft-capping) after the product
        model = tiny_model(arch)
        lens, explicit = LogitLens(model), LogitLens(model, lens_precision="fp32")
        assert lens.lens_precision == "fp32" and lens.lens_precision_requested == "fp32"
        x = _resid(lens, 3, 4)
        got = lens.metrics(x, METRICS, budget_bytes=64 * 1024)  # several chunks
        normed = lens.normalize(x)
        flat = normed.reshape(-1, normed.shape[-1])
        size = chunk_size_for(flat.shape[0], lens.vocab_size, 64 * 1024)
        assert size < lens.vocab_size
        w = lens.head.weight

        def chunks():
            for i in range(0, lens.vocab_size, size):
                out = torch.mm(flat, w[i : i + size].t()).view(*normed.shape[:-1], -1)
                for _, fn in lens._transforms:
                    out = fn(out)
                yield out

        with torch.no_grad():
            want = stream_metrics(chunks, METRICS, lens.vocab_size)
        again = explicit.metrics(x, METRICS, budget_bytes=64 * 1024)
        for k in want:
            assert torch.equal(got[k], want[k]), (arch, k)
            assert torch.equal(again[k], want[k]), (arch, k)
        assert "float32" in lens.lens_kernel


def test_bf16_logits_are_what_each_kernel_promises(bf16_here):
    """bf16: the bf16-rounded inputs' product, rounded to bf16 (within half a bf16 ulp, values representable in
    bf16); bf16x2: the same product unrounded (fp32 accuracy); bf16x3: the fp32 product itself, nearly."""
    lens = LogitLens(tiny_model("llama"), lens_precision="bf16")
    x = _resid(lens, 2, 3)
    with torch.no_grad():
        normed = lens.normalize(x).double()
        w = lens.head.weight.double()
        exact = normed @ w.t()  # float64
        rounded = normed.bfloat16().double() @ w.bfloat16().double().t()  # of the bf16-rounded inputs
        one, two, three = (lens.logits(x, precision=p).double() for p in ("bf16", "bf16x2", "bf16x3"))
    assert lens._products["bf16"].fp32_out is False  # the CPU has no fp32-output bf16 product
    assert torch.equal(one.float().bfloat16().double(), one)  # rounded to bf16
    assert ((one - rounded).abs() <= rounded.abs() * 2.0**-8 + 1e-6).all()
    assert (one - rounded).abs().max() > 1e-4  # and the rounding is visible
    assert (two - rounded).abs().max() < 1e-4 * rounded.abs().max()
    assert (three - exact).abs().max() < 2e-4 * exact.abs().max()
    assert (three - exact).abs().max() < (two - exact).abs().max() / 8


def test_reduced_precisions_move_every_metric_a_little_and_in_order(bf16_here):
    """Deviations against fp32 on the same residuals (a tiny model's small logits: the inputs' rounding dominates):
    nonzero for bf16, much smaller for bf16x3, all under 0.05 (nats for entropies); ``precision_deviation`` agrees
    with a direct comparison."""
    lens = LogitLens(tiny_model("gemma2"))
    x = _resid(lens, 4, 5, scale=4.0)
    dev = {p: lens.precision_deviation(x, METRICS, precision=p) for p in ("fp32", "bf16", "bf16x2", "bf16x3")}
    n = 4 * 5 * lens.n_layers
    for p, d in dev.items():
        assert set(d) == {"entropy", "renyi_0.5", "renyi_5", "kl_final"}
        assert all(v.n == n for v in d.values())
    assert all(v.max_abs == 0 and v.mean_abs == 0 for v in dev["fp32"].values())
    for k in dev["bf16"]:
        assert 0 < dev["bf16"][k].mean_abs and dev["bf16"][k].max_abs < 0.05
        assert dev["bf16x3"][k].mean_abs < dev["bf16"][k].mean_abs / 20
    ref = lens.metrics(x, METRICS, precision="fp32")
    got = lens.metrics(x, METRICS, precision="bf16")
    for k in ref:
        diff = (ref[k] - got[k]).abs()
        assert dev["bf16"][k].max_abs == pytest.approx(float(diff.max()), rel=1e-9)
        assert dev["bf16"][k].mean_abs == pytest.approx(float(diff.double().mean()), rel=1e-6)


@pytest.mark.slow
def test_on_smollm2_each_compensation_halves_the_deviation_at_least(bf16_here, smollm2):
    """Real residuals and a real head (logits up to ~90, where bf16's output rounding is 0.25): mean entropy
    deviation bf16 > 2 x bf16x2 > 20 x bf16x3, bf16 under 0.2 nats at worst."""
    prof = smollm2.profile(["The capital of France is", "Once upon a time"], max_len=4, keep_residuals=True)
    x = torch.as_tensor(prof.residuals)
    dev = {p: smollm2.lens.precision_deviation(x, ["shannon"], precision=p)["entropy"]
           for p in ("bf16", "bf16x2", "bf16x3")}
    assert dev["bf16"].max_abs < 0.2
    assert dev["bf16"].mean_abs > 2 * dev["bf16x2"].mean_abs > 20 * dev["bf16x3"].mean_abs > 0


def test_the_head_is_cast_once_and_again_when_it_changes(bf16_here):
    lens = LogitLens(tiny_model("llama"), lens_precision="bf16x3")
    x = _resid(lens, 2)
    lens.metrics(x, ["shannon"])
    prod = lens._products["bf16x3"]
    w_hi, w_k = prod.weights()
    lens.metrics(x, ["shannon"])
    assert prod.weights()[0] is w_hi and prod.weights()[1] is w_k  # cached, not recast per call
    assert w_k.shape == (lens.vocab_size, 3 * lens.d_model) and w_k.dtype == torch.bfloat16
    before = lens.metrics(x, ["shannon"])["entropy"]
    with torch.no_grad():
        lens.head.weight.mul_(2.0)  # an in-place change: the bf16 copies must follow
    assert prod.weights()[0] is not w_hi
    assert not torch.allclose(lens.metrics(x, ["shannon"])["entropy"], before)


def test_no_bf16_support_falls_back_to_fp32_with_one_line(monkeypatch, capsys):
    from model_inspector.options import option

    monkeypatch.setattr(lp, "_bf16_reason", lambda device: "this CPU has no bf16 instructions")
    model = tiny_model("llama")
    lens = LogitLens(model, lens_precision="bf16")
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == ["lens_precision bf16: this CPU has no bf16 instructions; using fp32 (recorded as fp32)"]
    assert lens.lens_precision == "fp32" and lens.lens_precision_requested == "bf16"
    assert lens.precision_info()["lens_precision"] == "fp32"
    x = _resid(lens, 2)
    assert torch.equal(lens.metrics(x, ["shannon"])["entropy"], LogitLens(model).metrics(x, ["shannon"])["entropy"])
    with pytest.raises(UserError, match="cannot run here"):
        lens.metrics(x, ["shannon"], precision="bf16")
    opt = option("lens_precision")  # the run identity records what will run on the run's device
    assert opt.identity and opt.legacy == "fp32" and opt.default == "fp32"
    assert opt.identity_value({"lens_precision": "bf16", "device": "cpu"}) == "fp32"
    assert opt.identity_value({"lens_precision": "bf16", "device": None}) == "bf16"  # several devices: as asked
    monkeypatch.setattr(lp, "_bf16_reason", lambda device: None)
    assert opt.identity_value({"lens_precision": "bf16x2", "device": "cpu"}) == "bf16x2"


def test_bad_precisions_are_one_clear_line(bf16_here):
    from model_inspector.options import check_value, option

    with pytest.raises(UserError, match="lens_precision must be one of fp32, bf16, bf16x2, bf16x3"):
        LogitLens(tiny_model("llama"), lens_precision="fp16")
    lens = LogitLens(tiny_model("llama"))
    with pytest.raises(UserError, match="got 'int8'"):
        lens.metrics(_resid(lens, 1), ["shannon"], precision="int8")
    with pytest.raises(UserError, match="--lens_precision must be one of fp32, bf16, bf16x2, bf16x3"):
        check_value(option("lens_precision"), "half")


def test_measure_deviation_records_every_lens_call_of_a_profile(bf16_here, tok):
    model = tiny_model("llama")
    prompts = ["ab cd", "efg", "hi jk lm"]
    mi = ModelInspector(model, tok, lens_precision="bf16")
    plain = mi.profile(prompts, max_len=5, batch_size=3, metrics=("shannon", "renyi:2"))
    with mi.lens.measure_deviation() as rec:
        prof = mi.profile(prompts, max_len=5, batch_size=3, metrics=("shannon", "renyi:2"))
    assert (prof.entropy == plain.entropy).all()  # measuring does not change the results
    res = rec.result()
    assert set(res) == {"entropy", "renyi_2"}
    assert res["entropy"].n == 3 * 5 * mi.n_layers  # every [prompt, token, layer] value
    assert res["entropy"].max_abs >= res["entropy"].mean_abs > 0
    fp32 = ModelInspector(model, tok).profile(prompts, max_len=5, batch_size=3)
    assert abs(abs(fp32.entropy - prof.entropy).max() - res["entropy"].max_abs) < 1e-6
    record = json.loads(json.dumps(rec.as_dict()))
    assert record["precision"] == "bf16" and record["against"] == "fp32"
    assert record["metrics"]["entropy"]["unit"] == "nats" and record["metrics"]["entropy"]["n"] == 3 * 5 * mi.n_layers
    line = rec.describe()
    assert line.startswith("lens precision bf16 vs fp32") and "entropy max" in line and "nats (n=" in line
    assert mi.lens._record is None  # closed
    with ModelInspector(model, tok).lens.measure_deviation() as none:  # fp32: nothing to measure
        ModelInspector(model, tok).profile(prompts[:1], max_len=2)
    assert none.result() == {}


def test_load_inspector_and_the_command_line_pass_the_precision(bf16_here, tiny_dir, tmp_path):
    from model_inspector.cli import load_inspector

    args = SimpleNamespace(model=str(tiny_dir), device="cpu", dtype="float32", lens_precision="bf16x2", lens_spec=None)
    mi = load_inspector(args)
    assert mi.lens.lens_precision == "bf16x2" and "addmm" in mi.lens.lens_kernel
    out = tmp_path / "formats.pkl"
    proc = run_script("generate_format_dataset.py", "--model", tiny_dir, "--n_topics", 2, "--max_len", 3,
                      "--num_windows", 1, "--out", out, "--no_progress", "--lens_precision", "bf16")
    from model_inspector import Results

    meta = Results.load(out).metadata
    expected = lp.resolve_lens_precision("bf16", "cpu")  # in the subprocess, the CPU's real support decides
    assert meta["identity"]["lens_precision"] == expected
    assert ("using fp32" in proc.stdout) == (expected == "fp32")


@pytest.mark.slow
def test_gpu_script_dry_run_on_cpu(tmp_path):
    """``benchmarks/gpu.sh --dry-run``: the GPU check's code on CPU with tiny models, every precision a row."""
    out = tmp_path / "gpu.json"
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--dry-run"], capture_output=True, text=True,
                          cwd=ROOT, timeout=600, env={**os.environ, "PY": sys.executable, "GPU_JSON": str(out),
                                                      "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["dry_run"] is True
    rows = data["rows"]
    assert {r["model"] for r in rows} == {"llama", "gemma3_text"}
    for model in ("llama", "gemma3_text"):
        f32 = {r["lens_precision"]: r for r in rows if r["model"] == model and r["weights"] == "float32"}
        assert set(f32) == {"fp32", "bf16", "bf16x2", "bf16x3"}
        for p, r in f32.items():  # on float32 weights only the lens precision differs from the reference
            assert (r["max_dev_vs_fp32_nats"] == 0) == (r["lens_precision_run"] == "fp32")
        assert {(r["weights"], r["lens_precision"]) for r in rows if r["model"] == model} >= {("bfloat16", "bf16")}
    for r in rows:
        assert r["tokens_per_s"] > 0 and r["original_tokens_per_s"] > 0 and r["peak_mem_gib"] > 0
        assert 0 <= r["max_dev_vs_fp32_nats"] < 0.1 and r["n_dev"] > 0
    assert set(data["kernels"]) == {f"{r['model']}/{r['weights']}/{r['lens_precision']}" for r in rows}
    table = proc.stdout.splitlines()
    assert any(ln.startswith("model") and "lens_precision" in ln and "max dev" in ln for ln in table)
    assert sum(" bf16x3 " in ln for ln in table) == 2


def test_a_reduced_precision_run_records_its_kernel_and_deviation_once(bf16_here, tiny_dir, tmp_path, capsys):
    """The runner: a bf16 run's file records the precision, the kernel and the deviation from fp32 measured on its
    first batch (n = that batch's prompts x tokens x layers); a fp32 run records no deviation."""
    from model_inspector import Results
    from model_inspector.commands.run import main

    stories = tmp_path / "stories.jsonl"
    stories.write_text("".join(json.dumps({"text": f"Once upon a time {w} went home."}) + "\n"
                               for w in ("Tom", "Ann", "a cat")))

    def run(precision, out):
        main([str(tiny_dir), "tinystories", "--n_stories", "1", "--data_file", str(stories),
              "--max_len", "3", "--batch_size", "4", "--results_dir", str(out), "--no_progress", "--device", "cpu",
              "--lens_precision", precision], experiment="tinystories", style="script")
        (path,) = out.glob("*.pkl")
        return Results.load(path).metadata

    meta = run("bf16", tmp_path / "bf16")
    assert meta["lens_precision"] == meta["lens_precision_requested"] == "bf16" and meta["lens_kernel"]
    dev = meta["lens_precision_deviation"]
    assert dev["precision"] == "bf16" and dev["against"] == "fp32"
    first = min(4, meta["n_total"])  # the first batch only
    assert dev["metrics"]["entropy"]["n"] == first * 3 * meta["n_layers"]
    assert dev["metrics"]["entropy"]["max_abs"] >= dev["metrics"]["entropy"]["mean_abs"] > 0
    assert "lens precision bf16 vs fp32" in capsys.readouterr().out
    plain = run("fp32", tmp_path / "fp32")
    assert plain["lens_precision"] == "fp32" and "lens_precision_deviation" not in plain
