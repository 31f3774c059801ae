"""``entropy-lens reproduce``: every claim of the paper, with its controls, on a list of models, in one command.

For each model, at a named scale (:data:`SCALES`): the TinyStories task experiment and its random-weights control
run (the same architecture, seeded random weights), evaluated with every control; the expansion and pruning layers
of both; MMLU with both gradings (the paper's generated letter, and the four letters' log-likelihood) and their
correctness prediction; the output formats and their classification (with the prompt-length control); the family
profiles (across the models); the layer-skipping study. Every step is a command a user could type (printed in the
report) and resumable: a second run reuses what is complete. The stages' wall times are recorded, and the paper's
scale is extrapolated from them. :mod:`model_inspector.report` turns the outputs into ``report.md`` and
``report.html`` with a verdict per claim.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

__all__ = ["Scale", "SCALES", "reproduce"]


@dataclass(frozen=True)
class Scale:
    """The sizes of one reproduction. ``ts_stories`` x 24 prompts, ``ts_tokens`` generated tokens; MMLU questions
    (``None``: the whole test split) and tokens; format topics x 3 prompts, tokens and windows; family samples and
    tokens; skip-layers questions (calibration and evaluation) and random draws; evaluation folds, k (tasks; the
    formats use the paper's k = 5), label permutations, bootstrap resamples."""

    ts_stories: int
    ts_tokens: int
    mmlu_questions: int | None
    mmlu_tokens: int
    format_topics: int
    format_tokens: int
    format_windows: int
    family_samples: int
    family_tokens: int
    skip_questions: int
    skip_random: int
    folds: int
    k: int
    permutations: int
    n_boot: int


SCALES = {
    "demo": Scale(ts_stories=3, ts_tokens=4, mmlu_questions=40, mmlu_tokens=4, format_topics=10, format_tokens=16,
                  format_windows=2, family_samples=8, family_tokens=8, skip_questions=24, skip_random=3, folds=3, k=9,
                  permutations=20, n_boot=200),
    "small": Scale(ts_stories=10, ts_tokens=8, mmlu_questions=120, mmlu_tokens=8, format_topics=30, format_tokens=48,
                   format_windows=4, family_samples=24, family_tokens=16, skip_questions=64, skip_random=8, folds=5,
                   k=15, permutations=50, n_boot=500),
    "paper": Scale(ts_stories=100, ts_tokens=8, mmlu_questions=None, mmlu_tokens=8, format_topics=182,
                   format_tokens=256, format_windows=8, family_samples=64, family_tokens=32, skip_questions=1000,
                   skip_random=20, folds=10, k=29, permutations=100, n_boot=1000),
}
#: MMLU test questions when ``mmlu_questions`` is None (the whole split)
MMLU_TEST = 14042


def _call(argv: list[str], log) -> str:
    """Run ``entropy-lens ARGV`` in this process; its printed output (also written to ``log``)."""
    from .cli import command_main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = command_main(argv[0])(argv[1:])
    text = buf.getvalue()
    log.write(f"$ entropy-lens {' '.join(map(str, argv))}\n{text}\n")
    log.flush()
    if code:
        raise RuntimeError(f"entropy-lens {argv[0]} ended with {code}")
    return text


def reproduce(models: list[str], *, scale: str | Scale = "small", data_dir: str | Path | None = None,
              out_dir: str | Path = "reproduce", steps=None, threads: int | None = None, progress: bool = False) -> dict:
    """Run every step for ``models`` at ``scale`` into ``out_dir`` and write the report. Returns the manifest
    (also ``out_dir/manifest.json``): the scale, per model and step its outputs, the commands and wall seconds."""
    from .report import write_report
    from .run.config import model_label

    sc = SCALES[scale] if isinstance(scale, str) else scale
    name = scale if isinstance(scale, str) else "custom"
    out = Path(out_dir)
    res, ev = out / "results", out / "evaluations"
    res.mkdir(parents=True, exist_ok=True)
    ev.mkdir(parents=True, exist_ok=True)
    data = Path(data_dir) if data_dir else None
    ts_data = ["--data_file", str(data / "tinystories_validation_head.jsonl")] if data else []
    mmlu_data = ["--data_file", str(data / "mmlu_test.jsonl")] if data else []
    thr = ["--threads", str(threads)] if threads else []
    common = ["--results_dir", str(res), "--resume", "--no_progress", *thr]
    steps = list(steps or ("tasks", "strategies", "mmlu", "formats", "family", "skip"))
    manifest = {"scale": name, "sizes": asdict(sc), "models": {}, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    old = out / "manifest.json"
    if old.exists():  # a resumed run: the steps of earlier runs stay in the report; seconds add up
        before = json.loads(old.read_text())
        if before.get("sizes") == manifest["sizes"]:
            manifest.update(models=before.get("models", {}), started=before.get("started", manifest["started"]))
            if "family_across" in before:
                manifest["family_across"] = before["family_across"]
    log = (out / "commands.log").open("a")

    def stage(model: str, step: str, argvs: list[list[str]]):
        """Run a step's commands; an analysis that cannot be done at this size (too few samples of a class...) is
        recorded as such, not fatal; a profiling run that fails stops everything (its outputs are safe)."""
        from .errors import UserError

        entry = manifest["models"].setdefault(model, {}).setdefault(step, {"commands": [], "seconds": 0.0})
        t0 = time.time()
        try:
            for argv in argvs:
                argv = [str(a) for a in argv]
                if "entropy-lens " + " ".join(argv) not in entry["commands"]:
                    entry["commands"].append("entropy-lens " + " ".join(argv))
                if progress:
                    print(f"[{model}] entropy-lens {' '.join(argv)}", flush=True)
                try:
                    _call(argv, log)
                except UserError as exc:
                    if argv[0] in ("profile-ts", "profile-mmlu", "formats", "run", "skip-layers"):
                        raise
                    entry.setdefault("errors", []).append(f"entropy-lens {argv[0]}: {exc}")
                    log.write(f"error: {exc}\n")
        finally:  # saved after every stage, also a failed or interrupted one: a resumed run adds to these seconds
            entry["seconds"] = round(entry["seconds"] + time.time() - t0, 1)
            save()
        return entry

    def save():
        from .storage import atomic_write_bytes

        atomic_write_bytes(out / "manifest.json", json.dumps(manifest, indent=1).encode())

    for model in models:
        m = model_label(model)
        n_q = sc.mmlu_questions
        if "tasks" in steps:
            ts = res / f"{m}_tinystories_{sc.ts_stories}.pkl"
            ctrl = res / f"{m}_tinystories_{sc.ts_stories}_random0.pkl"
            run = ["profile-ts", model, "tinystories", "--n_stories", sc.ts_stories, "--max_len", sc.ts_tokens,
                   *ts_data, *common]
            e = stage(model, "tasks", [run, run + ["--random_init", 0],
                                       ["evaluate", ts, "--label", "prompt", "--k", sc.k, "--folds", sc.folds,
                                        "--controls", "--permutations", sc.permutations, "--control", ctrl,
                                        "--out_dir", ev, "--no_plot"]])
            e.update(results=str(ts), control=str(ctrl), prompts=24 * sc.ts_stories, tokens=sc.ts_tokens)
        if "strategies" in steps:
            ts = res / f"{m}_tinystories_{sc.ts_stories}.pkl"
            ctrl = res / f"{m}_tinystories_{sc.ts_stories}_random0.pkl"
            e = stage(model, "strategies", [["strategies", f, "--label", "prompt", "--n_boot", sc.n_boot, "--out_dir",
                                             ev] for f in (ts, ctrl)])
            e.update(results=str(ts), control=str(ctrl))
        if "mmlu" in steps:
            argvs, files = [], {}
            for grading in ("generate", "loglik"):
                f = res / (f"{m}_mmlu_base{f'_n{n_q}' if n_q else ''}" + ("_loglik" if grading == "loglik" else "")
                           + ".pkl")
                files[grading] = str(f)
                argvs += [["profile-mmlu", model, "mmlu", "--max_len", sc.mmlu_tokens, "--grading", grading,
                           *(["--n_questions", n_q] if n_q else []), *mmlu_data, *common],
                          ["evaluate", f, "--label", "correct", "--k", sc.k, "--folds", sc.folds, "--controls",
                           "--permutations", sc.permutations, "--out_dir", ev, "--no_plot"]]
            e = stage(model, "mmlu", argvs)
            e.update(results=files, prompts=n_q or MMLU_TEST, tokens=sc.mmlu_tokens)
        if "formats" in steps:
            f = res / f"{m}_formats_{sc.format_topics}.pkl"
            e = stage(model, "formats", [
                ["formats", "--model", model, "--n_topics", sc.format_topics, "--max_len", sc.format_tokens,
                 "--num_windows", sc.format_windows, "--out", f, "--resume", "--no_progress",
                 *thr],
                ["classify-formats", "-d", f, "-a", 0.5, 1, 5, "-k", 5, "--folds", sc.folds, "--out_dir", ev, "--json",
                 f"{m}_formats_summary.json"],
                ["evaluate", f, "--label", "format", "--metric", "entropy", "--num_windows", sc.format_windows, "--k", 5,
                 "--folds", sc.folds, "--controls", "--permutations", sc.permutations, "--out_dir", ev, "--no_plot"]])
            e.update(results=str(f), summary=str(ev / f"{m}_formats_summary.json"), prompts=3 * sc.format_topics,
                     tokens=sc.format_tokens)
        if "family" in steps:
            e = stage(model, "family", [["run", "family", model, "--n_samples", sc.family_samples, "--max_len",
                                         sc.family_tokens, *common]])
            e.update(results=str(res / f"{m}_family_{sc.family_samples}.pkl"), prompts=sc.family_samples,
                     tokens=sc.family_tokens)
        if "skip" in steps:
            e = stage(model, "skip", [["skip-layers", model, "--n_questions", sc.skip_questions, "--n_random",
                                       sc.skip_random, "--k", 3, "--results_dir", res, "--resume", "--no_progress",
                                       *mmlu_data, *thr]])
            stem = res / f"{m}_skip_mmlu_n{sc.skip_questions}"
            e.update(summary=f"{stem}_summary.json", table=f"{stem}_table.csv", prompts=sc.skip_questions)
    if "family" in steps:
        files = [manifest["models"][m]["family"]["results"] for m in models]
        if len(files) >= 2:
            t0 = time.time()
            argv = ["family", *files, "--out_dir", ev, "--n_boot", min(sc.n_boot, 200)]
            _call([str(a) for a in argv], log)
            manifest["family_across"] = {"commands": ["entropy-lens " + " ".join(map(str, argv))],
                                         "csv": str(ev / "family_agreement.csv"), "seconds": round(time.time() - t0, 1)}
    manifest["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    log.close()
    save()
    write_report(out, manifest)
    return manifest


def paper_scale_estimate(manifest: dict) -> dict:
    """Seconds per model at the paper's scale, per step, from the measured rates of this run (time per generated
    token for profiling steps, per item for skip-layers): ``{model: {step: seconds, "total": seconds}}``."""
    paper, here = SCALES["paper"], manifest["sizes"]
    work_here = {"tasks": 2 * 24 * here["ts_stories"] * here["ts_tokens"],
                 "mmlu": 2 * (here["mmlu_questions"] or MMLU_TEST) * here["mmlu_tokens"],
                 "formats": 3 * here["format_topics"] * here["format_tokens"],
                 "family": here["family_samples"] * here["family_tokens"], "skip": here["skip_questions"]}
    work_paper = {"tasks": 2 * 24 * paper.ts_stories * paper.ts_tokens, "mmlu": 2 * MMLU_TEST * paper.mmlu_tokens,
                  "formats": 3 * paper.format_topics * paper.format_tokens,
                  "family": paper.family_samples * paper.family_tokens, "skip": paper.skip_questions}
    out = {}
    for model, steps in manifest["models"].items():
        est = {}
        for step, entry in steps.items():
            if step in work_here and work_here[step]:
                est[step] = round(entry["seconds"] * work_paper[step] / work_here[step])
            elif step == "strategies":
                est[step] = round(entry["seconds"] * paper.ts_stories / max(1, here["ts_stories"]))
        est["total"] = sum(est.values())
        out[model] = est
    return out


def with_sizes(scale: str, **changes) -> Scale:
    """A named scale with some sizes changed (for tests and quick looks)."""
    return replace(SCALES[scale], **changes)
