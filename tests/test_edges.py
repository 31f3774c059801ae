"""The last edges of a run: a fingerprint of every byte, a finalisation that never loses rows, exceptions that save
progress, any metric set, NaN caught where it arises, truthful records of threads and versions.

(The kill points of the final write and of a merge are in test_edges_finalise.py; one-line errors, CSV cells and the
conversion lock in test_edges_cli.py.)
"""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import interrupt_at, never_load, run_config, run_samples, same_results

from model_inspector.errors import ResultsFileError, RunInterrupted, UserError
from model_inspector.experiments.base import Sample
from model_inspector.results import Results, load_results
from model_inspector.run.config import IdentityMismatch, fingerprint_path, legacy_fingerprint
from model_inspector.run.loop import NonFiniteRow, RunAborted, run_profiling
from model_inspector.run.output import merge_shards, shard_path
from model_inspector.storage import PartsStore



pytestmark = pytest.mark.usefixtures("one_thread")
_samples, _cfg = run_samples, run_config


class _Failing:
    """The inspector, with ``profile`` raising ``exc`` at its ``at``-th call."""

    def __init__(self, mi, at, exc):
        self._mi, self._at, self._exc, self.calls = mi, at, exc, 0

    def __getattr__(self, name):
        return getattr(self._mi, name)

    def profile(self, *a, **kw):
        self.calls += 1
        if self.calls == self._at:
            raise self._exc
        return self._mi.profile(*a, **kw)


# ------------------------------------------------------------------------------------------- 1. fingerprint
def _weights_model(path: Path) -> Path:
    """A tiny Llama whose weight file is over 4 MiB (the old fingerprint sampled such files)."""
    from tiny_models import char_tokenizer, tiny_model

    tiny_model("llama", hidden_size=256, intermediate_size=512, num_hidden_layers=2,
               max_position_embeddings=2048).save_pretrained(path)
    char_tokenizer().save_pretrained(path)
    return path


def test_an_edit_in_place_with_its_mtime_restored_is_refused_on_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("ENTROPY_LENS_CACHE", str(tmp_path / "cache"))
    from model_inspector import ModelInspector

    model = _weights_model(tmp_path / "m")
    weights = model / "model.safetensors"
    size = weights.stat().st_size
    assert size > 4 * 2**20
    mi = ModelInspector(str(model))
    out = tmp_path / "r.pkl"
    with pytest.raises(RunInterrupted):
        run_profiling(_samples(8), _cfg(model), out, load_inspector=lambda: mi, label_fn=interrupt_at(5),
                      progress=False)
    legacy = legacy_fingerprint(model)
    # zero 4 KiB of weights between two of the old sampled blocks, in place, and restore the mtime
    st = weights.stat()
    offset = (size - 2**16) // 30
    with open(weights, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\0" * 4096)
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert weights.stat().st_mtime_ns == st.st_mtime_ns and weights.stat().st_size == size
    assert legacy_fingerprint(model) == legacy  # what the old fingerprint saw: nothing
    with pytest.raises(IdentityMismatch, match="model_fingerprint: file"):
        run_profiling(_samples(8), _cfg(model), out, load_inspector=never_load, resume=True, progress=False)
    assert len(PartsStore(out).read_rows()["entropy"]) == 4  # the rows of the first model are untouched


def test_file_digests_are_cached_per_file_version(tmp_path, monkeypatch, tiny_dir):
    monkeypatch.setenv("ENTROPY_LENS_CACHE", str(tmp_path / "cache"))
    import model_inspector.run.config as config

    model = tmp_path / "m"
    shutil.copytree(tiny_dir, model)
    first = fingerprint_path(model)
    index = json.loads((tmp_path / "cache" / config.FINGERPRINT_INDEX).read_text())
    files = sorted(str(f.resolve()) for f in model.iterdir())
    assert sorted(index) == files and all(len(e["digest"]) == 64 for e in index.values())

    def no_reading(*a, **kw):
        raise AssertionError("a cached file was read again")

    monkeypatch.setattr(config, "open", no_reading, raising=False)
    assert fingerprint_path(model) == first  # every digest from the index
    monkeypatch.undo()
    monkeypatch.setenv("ENTROPY_LENS_CACHE", str(tmp_path / "cache"))
    (model / "config.json").write_text((model / "config.json").read_text() + " ")  # the config is part of it
    assert fingerprint_path(model) != first


# ------------------------------------------------------------------------------------------- 2. finalisation
def test_a_partly_removed_sidecar_never_overwrites_the_complete_file(tiny_dir, mi, tmp_path):
    """What an rmtree killed half-way left (meta.json marked complete, some parts gone) beside the complete file."""
    out = tmp_path / "r.pkl"
    full = run_profiling(_samples(), _cfg(tiny_dir), out, load_inspector=lambda: mi, update_steps=8, progress=False)
    # rebuild that state: the sidecar of the same run with its first two parts deleted
    keep = tmp_path / "keep.pkl"

    def killed(path, state):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # the rows complete in the sidecar, the final write cut
        run_profiling(_samples(), _cfg(tiny_dir), keep, load_inspector=lambda: mi, update_steps=8, progress=False,
                      save=killed)
    shutil.copytree(PartsStore(keep).dir, PartsStore(out).dir)
    for part in PartsStore(out).parts()[:2]:
        part.unlink()
    assert PartsStore(out).read_meta()["complete"] is True and len(PartsStore(out).read_rows()["entropy"]) == 8
    back = run_profiling(_samples(), _cfg(tiny_dir), out, load_inspector=never_load, resume=True, progress=False)
    assert len(back["entropy"]) == 24
    same_results(full, load_results(out))
    assert not PartsStore(out).dir.exists()


def test_a_finished_file_with_its_sidecar_left_is_finished_for_every_later_run(tiny_dir, mi, tmp_path):
    """A kill after the final rename leaves the complete sidecar beside the complete file: a later run without
    --resume says the file exists (not "an unfinished run"), and the leftover is gone."""
    out = tmp_path / "r.pkl"
    run_profiling(_samples(), _cfg(tiny_dir), out, load_inspector=lambda: mi, update_steps=8, progress=False)
    keep = tmp_path / "keep.pkl"

    def killed(path, state):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_profiling(_samples(), _cfg(tiny_dir), keep, load_inspector=lambda: mi, update_steps=8, progress=False,
                      save=killed)
    shutil.copytree(PartsStore(keep).dir, PartsStore(out).dir)
    with pytest.raises(FileExistsError, match=f"{out} is already complete .24 samples.: pass --overwrite") as info:
        run_profiling(_samples(), _cfg(tiny_dir), out, load_inspector=never_load, progress=False)
    assert "unfinished" not in str(info.value) and not PartsStore(out).dir.exists()


def test_a_cut_merge_leaves_no_temporary_after_resume(tiny_dir, mi, tmp_path):
    from model_inspector.run.distributed import run_distributed

    out = tmp_path / "dp.pkl"
    for rank in range(2):
        run_profiling(_samples(), _cfg(tiny_dir), shard_path(out, rank, 2), load_inspector=lambda: mi,
                      shard=(rank, 2), finalize=False, lock=False, progress=False)  # as the ranks of a launch do

    def half_written(path, state):  # a kill in the middle of the merge write
        Path(path).with_name(f".{Path(path).name}.k1ll3d.tmp").write_bytes(b"half a pickle")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        merge_shards(out, 2, save=half_written)
    merged = run_distributed(_samples(), _cfg(tiny_dir), out, load_inspector=never_load, resume=True,
                             progress=False)
    assert len(merged["entropy"]) == 24
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dp.pkl"]


def test_the_sidecar_is_removed_through_a_tombstone(tmp_path, monkeypatch):
    import model_inspector.storage as storage

    store = PartsStore(tmp_path / "x.pkl")
    store.write_meta({"complete": True})
    store.append({"entropy": [np.zeros((2, 3), np.float32)]})

    def killed(name):
        if name == "during_sidecar_removal":
            raise KeyboardInterrupt

    monkeypatch.setattr(storage, "kill_point", killed)
    with pytest.raises(KeyboardInterrupt):
        store.remove()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert not store.dir.exists() and len(left) == 1 and left[0].startswith(".x.pkl.parts.removing-")
    assert storage.remove_stale_temporaries(tmp_path / "x.pkl") and not any(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------- 3. exceptions
@pytest.mark.parametrize("exc, raised, message", [
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), RunAborted, "out of memory in batch 4"),
    (ZeroDivisionError("a bug"), ZeroDivisionError, "a bug"),
])
def test_an_exception_in_the_loop_saves_the_finished_batches(exc, raised, message, tiny_dir, mi, tmp_path, capsys):
    full = run_profiling(_samples(), _cfg(tiny_dir), tmp_path / "full.pkl", load_inspector=lambda: mi,
                         progress=False)
    out = tmp_path / "r.pkl"
    with pytest.raises(raised, match=message) as info:
        run_profiling(_samples(), _cfg(tiny_dir), out, load_inspector=lambda: _Failing(mi, 4, exc),
                      update_steps=100, progress=False)
    assert len(PartsStore(out).read_rows()["entropy"]) == 12  # three batches of 4, none checkpointed before
    said = str(info.value) if raised is RunAborted else capsys.readouterr().err
    assert "12 of 24 samples are safe in" in said and "--resume" in said
    if raised is not RunAborted:  # a bug keeps its own exception (and traceback), after the line
        assert said.startswith("error: ZeroDivisionError in batch 4")
    resumed = run_profiling(_samples(), _cfg(tiny_dir), out, load_inspector=lambda: mi, resume=True, progress=False)
    same_results(full, resumed)


def _nan_model(path: Path, char: str | None = None, everywhere: bool = False) -> Path:
    """A tiny Llama whose embedding row of ``char`` is NaN (or whose head is NaN: logits NaN everywhere)."""
    from tiny_models import char_tokenizer, tiny_model

    model, tok = tiny_model("llama", max_position_embeddings=2048), char_tokenizer()
    with torch.no_grad():
        if everywhere:
            model.lm_head.weight.fill_(float("nan"))
        else:
            model.model.embed_tokens.weight[tok.convert_tokens_to_ids(char)] = float("nan")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _nan_char() -> str:
    """A character absent from the lens check's probe input (ids drawn with seed 0), so that the model loads."""
    from tiny_models import char_tokenizer

    tok = char_tokenizer()
    probe = set(torch.randint(3, 100, (1, 6), generator=torch.Generator().manual_seed(0)).flatten().tolist())
    return next(c for c in "~^|`#" if tok.convert_tokens_to_ids(c) not in probe)


def _nan_samples(char):
    texts = [f"A quiet story number {i}." for i in range(12)]
    texts[9] = f"A loud story {char} number 9."
    return [Sample(t, {"prompt": "p"}) for t in texts]


def test_a_row_with_nan_metrics_is_refused_naming_its_prompt_after_saving_the_rows_before(tmp_path):
    from model_inspector import ModelInspector

    char = _nan_char()
    model = _nan_model(tmp_path / "nan-emb", char)
    mi = ModelInspector(str(model))
    cfg = _cfg(model, sample=False, max_len=1, batch_order="given")
    out = tmp_path / "r.pkl"
    with pytest.raises(NonFiniteRow, match=r"sample_index 9 \('A loud story") as info:
        run_profiling(_nan_samples(char), cfg, out, load_inspector=lambda: mi, progress=False)
    assert "8 of 12 samples are safe" in str(info.value) and "--keep_nonfinite" in str(info.value)
    assert len(PartsStore(out).read_rows()["entropy"]) == 8
    kept = run_profiling(_nan_samples(char), cfg, out, load_inspector=lambda: mi, resume=True, keep_nonfinite=True,
                         progress=False)
    assert kept["metadata"]["n_nonfinite"] == 1 and np.isnan(kept["entropy"][9]).all()
    assert np.isfinite(np.stack(kept["entropy"][:9])).all()
    whole = run_profiling(_nan_samples(char), cfg, tmp_path / "whole.pkl", load_inspector=lambda: mi,
                          keep_nonfinite=True, progress=False)
    same_results(whole, kept)


def test_nan_logits_while_sampling_save_progress(tmp_path):
    from model_inspector import ModelInspector

    char = _nan_char()
    model = _nan_model(tmp_path / "nan-emb", char)
    mi = ModelInspector(str(model))
    out = tmp_path / "r.pkl"
    with pytest.raises(RunAborted, match="sampling failed in batch 3.*8 of 12 samples are safe"):
        run_profiling(_nan_samples(char), _cfg(model, max_len=1, batch_order="given"), out, load_inspector=lambda: mi,
                      progress=False)
    assert len(PartsStore(out).read_rows()["entropy"]) == 8


def test_a_model_with_nan_logits_everywhere_is_diagnosed_at_load(tmp_path):
    from model_inspector import ModelInspector
    from model_inspector.errors import LensResolutionError

    model = _nan_model(tmp_path / "nan-head", everywhere=True)
    with pytest.raises(LensResolutionError, match="the model's own logits are not finite") as info:
        ModelInspector(str(model))
    assert "unrecognised transform" not in str(info.value)


# ------------------------------------------------------------------------------------------- 4. any metric set
@pytest.mark.parametrize("metric, key", [("renyi:0", "renyi_0"), ("renyi:inf", "renyi_inf")])
def test_any_metric_set_is_a_first_class_file(metric, key, tiny_dir, mi, tmp_path, capsys):
    from model_inspector.cli import run_main
    from model_inspector.commands import evaluate, explore

    cfg = _cfg(tiny_dir, metrics=(metric,))
    full = run_profiling(_samples(), cfg, tmp_path / "full.pkl", load_inspector=lambda: mi, progress=False)
    out = tmp_path / "r.pkl"
    with pytest.raises(RunAborted):
        run_profiling(_samples(), cfg, out, load_inspector=lambda: _Failing(mi, 3, RuntimeError("out of memory")),
                      update_steps=4, progress=False)
    resumed = run_profiling(_samples(), cfg, out, load_inspector=lambda: mi, resume=True, progress=False)
    same_results(full, resumed)
    res = Results.load(out)
    assert res.metric_keys == [key] and res.profiles(key).shape[0] == 24
    for extra in ([], ["--metric", key]):  # the default is the file's first metric
        with pytest.raises(SystemExit) as done:
            run_main(lambda: evaluate.main([str(out), "--label", "task", "--folds", "2", "--k", "3", "--no_plot",
                                            "--out_dir", str(tmp_path / "ev"), *extra]))
        assert done.value.code == 0, capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        run_main(lambda: explore.main([str(out), "--out", str(tmp_path / "x.html")]))
    assert done.value.code == 0 and (tmp_path / "x.html").stat().st_size > 0


def test_a_ragged_row_is_refused_at_write_and_at_read(tmp_path):
    import pickle

    from model_inspector.results.layouts import write

    rows = [np.zeros((3, 4), np.float32)] * 3 + [np.zeros((2, 4), np.float32)]
    state = {"entropy": rows, "sample_index": [0, 1, 2, 7], "metadata": {}}
    with pytest.raises(ResultsFileError, match=r"column 'entropy' is ragged: row 3 \(sample_index 7\) has shape "
                                               r"\(2, 4\)"):
        write(tmp_path / "w.pkl", state)
    assert not (tmp_path / "w.pkl").exists()
    (tmp_path / "r.pkl").write_bytes(pickle.dumps(state))
    with pytest.raises(ResultsFileError, match="column 'entropy' is ragged: row 3"):
        load_results(tmp_path / "r.pkl")


# ------------------------------------------------------------------------------------------- 6. records
def test_threads_and_versions_are_recorded_per_part_and_reused_on_resume(tiny_dir, mi, tmp_path, capsys):
    torch.set_num_threads(1)  # as the one_thread fixture (module-wide) already set; restored by it
    full = run_profiling(_samples(), _cfg(tiny_dir), tmp_path / "full.pkl", load_inspector=lambda: mi,
                         progress=False)
    out = tmp_path / "r.pkl"
    with pytest.raises(RunAborted):
        run_profiling(_samples(), _cfg(tiny_dir), out, load_inspector=lambda: _Failing(mi, 3, MemoryError(
            "out of memory")), update_steps=4, progress=False)
    torch.set_num_threads(2)  # what a default would give on a quiet machine
    resumed = run_profiling(_samples(), _cfg(tiny_dir), out, load_inspector=lambda: mi, resume=True,
                            update_steps=4, progress=False)
    assert "using 1 CPU threads, as the run so far did" in capsys.readouterr().out
    same_results(full, resumed)
    meta = load_results(out)["metadata"]
    assert meta["threads"] == 1 and meta["parts"] == [{"rows": 24, "threads": 1, "versions": meta["versions"]}]
    assert meta["versions"]["torch"] == str(torch.__version__)
    # a resume that asks for another count says so, part by part
    with pytest.raises(RunAborted):
        run_profiling(_samples(), _cfg(tiny_dir), tmp_path / "m.pkl", update_steps=4, progress=False,
                      load_inspector=lambda: _Failing(mi, 3, MemoryError("out of memory")), threads=1)
    run_profiling(_samples(), _cfg(tiny_dir), tmp_path / "m.pkl", load_inspector=lambda: mi, resume=True,
                  threads=2, update_steps=4, progress=False)
    meta = load_results(tmp_path / "m.pkl")["metadata"]
    assert meta["threads"] == [1, 2] and [(p["rows"], p["threads"]) for p in meta["parts"]] == [(8, 1), (16, 2)]


def test_threads_above_the_usable_cores_warn(capsys):
    from model_inspector.threads import available_cores, set_threads

    n = available_cores() + 1
    assert set_threads(n) == n
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: --threads {n} is more than the {n - 1} cores")
    set_threads(1)
    assert capsys.readouterr().err == ""


def test_update_steps_below_one_is_a_user_error(tiny_dir, tmp_path):
    for bad in (0, -3, None):
        with pytest.raises(UserError, match="--update_steps must be a positive integer"):
            run_profiling(_samples(), _cfg(tiny_dir), tmp_path / "r.pkl", load_inspector=never_load, update_steps=bad)


def test_the_library_warns_once_about_non_finite_metrics(tmp_path):
    """mi.profile itself (no runner to refuse the row) says, once, that a model gave NaN for some input."""
    import warnings

    from model_inspector import ModelInspector, generation

    char = _nan_char()
    path = _nan_model(tmp_path / "nan", char)
    mi = ModelInspector(str(path))
    generation._WARNED_NONFINITE = False
    with pytest.warns(RuntimeWarning, match=r"non-finite metrics \(entropy\)"):
        mi.profile(["fine words", f"bad {char} words"], max_len=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mi.profile(["fine words", f"bad {char} words"], max_len=1)  # shown once
