"""Results you can trust: run identity, the output lock, the append-only sidecar, preflight, validated data."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import run_script, same_results

from model_inspector.experiments.tinystories import tinystories_samples
from model_inspector.results import load_results
from model_inspector.run.config import IdentityMismatch, RunConfig
from model_inspector.run.loop import run_profiling
from model_inspector.run.output import merge_shards, shard_path
from model_inspector.storage import PartsStore

ROOT = Path(__file__).resolve().parents[1]
STORIES = ["Tom had a red ball. He liked to play with it every day.", "Sue saw a cat. The cat was big and soft.",
           "Ben and Mia went to the park. They saw a dog."]


def one_line_error(proc, *fragments):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def stories_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("d") / "stories.jsonl"
    p.write_text("".join(json.dumps({"text": s}) + "\n" for s in STORIES))
    return p


def _samples(n=24):
    return tinystories_samples(STORIES, seed=0)[0][:n]


def _cfg(tiny_dir, **kw):
    base = dict(model=str(tiny_dir), dataset="tinystories", max_len=3, batch_size=4, sample=True, seed=5,
                metrics=("shannon",), dtype="float32", device="cpu")
    return RunConfig(**{**base, **kw})


# ----------------------------------------------------------------------------------------- identity
@pytest.mark.parametrize("field, change", [
    ("dtype", {"dtype": "bfloat16"}), ("device", {"device": "cuda"}), ("seed", {"seed": 6}),
    ("max_len", {"max_len": 4}), ("sample", {"sample": False}), ("temperature", {"temperature": 0.7}),
    ("chat_template", {"chat_template": True}), ("prepend_bos", {"prepend_bos": "never"}),
    ("metrics", {"metrics": ("shannon", "renyi:2")}), ("batch_size", {"batch_size": 8}),
    ("budget_mb", {"budget_mb": 64}), ("compile", {"compile": True}), ("extra", {"extra": {"n_stories": 9}}),
    ("batch_order", {"batch_order": "given"}), ("keep_top_tokens", {"keep_top_tokens": 2}),
])
def test_resume_with_another_setting_is_refused_before_loading(field, change, tiny_dir, mi, tmp_path):
    out = tmp_path / "r.pkl"
    run_profiling(_samples(), _cfg(tiny_dir), out, load_inspector=lambda: mi, progress=False)
    before = out.read_bytes()

    def never():
        raise AssertionError("the model must not load when the identity differs")

    with pytest.raises(IdentityMismatch, match=f"settings differ \\({field}: file "):
        run_profiling(_samples(), _cfg(tiny_dir, **change), out, load_inspector=never, resume=True, progress=False)
    assert out.read_bytes() == before


def test_resume_with_other_data_or_another_model_of_the_same_name_is_refused(tiny_dir, mi, tmp_path):
    from tiny_models import char_tokenizer, tiny_model

    out = tmp_path / "r.pkl"
    run_profiling(_samples(), _cfg(tiny_dir), out, load_inspector=lambda: mi, progress=False)
    with pytest.raises(IdentityMismatch, match="data_fingerprint: file"):
        run_profiling(_samples()[::-1], _cfg(tiny_dir), out, load_inspector=lambda: mi, resume=True, progress=False)
    # a model in another folder with the same last path component
    other = tmp_path / "b" / tiny_dir.name
    tiny_model("llama", seed=1, max_position_embeddings=2048).save_pretrained(other)
    char_tokenizer().save_pretrained(other)
    with pytest.raises(IdentityMismatch, match="model: file .*model_fingerprint: file"):
        run_profiling(_samples(), _cfg(other), out, load_inspector=lambda: mi, resume=True, progress=False)
    # the same settings: the complete file is handed back without loading the model
    again = run_profiling(_samples(), _cfg(tiny_dir), out, load_inspector=lambda: 1 / 0, resume=True, progress=False)
    assert again["metadata"]["identity"]["model"] == str(tiny_dir.resolve())
    assert len(again["metadata"]["identity"]["model_fingerprint"]) == 16


def test_cli_resume_with_another_dtype_is_refused(tiny_dir, stories_file, tmp_path):
    args = ["run_experiments_ts.py", tiny_dir, "tinystories", "--n_stories", 1, "--data_file", stories_file,
            "--max_len", 2, "--results_dir", tmp_path, "--no_progress"]
    run_script(*args)
    out = tmp_path / "tiny-llama_tinystories_1.pkl"
    before = out.read_bytes()
    one_line_error(run_script(*args, "--resume", "--dtype", "bfloat16", check=False),
                   "settings differ (dtype: file 'float32' vs now 'bfloat16')")
    assert out.read_bytes() == before


# ----------------------------------------------------------------------------------------- lock
def _slow_model(path):
    from tiny_models import char_tokenizer, tiny_model

    tiny_model("llama", hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
               max_position_embeddings=4096).save_pretrained(path)
    char_tokenizer().save_pretrained(path)
    return path


def test_a_second_run_on_the_same_output_is_refused(tmp_path, stories_file):
    d = _slow_model(tmp_path / "slowish")
    args = ["run_experiments_ts.py", d, "tinystories", "--n_stories", 3, "--data_file", stories_file, "--max_len", 24,
            "--batch_size", 2, "--update_steps", 2, "--no_progress", "--seed", 3, "--results_dir", tmp_path / "run"]
    first = subprocess.Popen([sys.executable, *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    out = tmp_path / "run" / "slowish_tinystories_3.pkl"
    deadline = time.time() + 120
    while not PartsStore(out).parts() and time.time() < deadline:
        time.sleep(0.02)
    second = run_script(*args, "--overwrite", "--seed", 4, check=False)
    one_line_error(second, "is being written by pid", str(first.pid))
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    data = load_results(out)
    assert len(data["entropy"]) == 72 and data["metadata"]["identity"]["seed"] == 3


def test_lock_names_its_holder_and_is_released(tmp_path):
    from model_inspector.storage import OutputLock

    out = tmp_path / "x.pkl"
    with OutputLock(out):
        code = f"from model_inspector.storage import OutputLock; OutputLock({str(out)!r}).acquire()"
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
        assert "OutputLockedError" in proc.stderr and f"pid {os.getpid()}" in proc.stderr
    with OutputLock(out):  # released: taken again
        pass


# ----------------------------------------------------------------------------------------- sidecar, kills, merges
def test_checkpoints_append_and_a_cut_final_write_is_finished_by_resume(tiny_dir, mi, tmp_path):
    full = run_profiling(_samples(), _cfg(tiny_dir), tmp_path / "full.pkl", load_inspector=lambda: mi, progress=False)
    out = tmp_path / "cut.pkl"
    seen = []

    class Killed(BaseException):
        pass

    def save_then_die(path, state):  # a kill in the middle of the final write: a half-written temporary
        seen.append(len(PartsStore(path).parts()))
        Path(path).with_name(f".{Path(path).name}.abc123.tmp").write_bytes(b"half a pickle")
        raise Killed

    with pytest.raises(Killed):
        run_profiling(_samples(), _cfg(tiny_dir), out, load_inspector=lambda: mi, update_steps=8, save=save_then_die,
                      progress=False)
    assert seen == [3] and not out.exists()  # 24 samples, one part per 8
    assert len(load_results(out)["entropy"]) == 24  # readable from the sidecar
    resumed = run_profiling(_samples(), _cfg(tiny_dir), out, load_inspector=lambda: 1 / 0, resume=True, progress=False)
    same_results(full, resumed)
    same_results(full, load_results(out))
    assert sorted(p.name for p in tmp_path.iterdir() if "cut" in p.name) == ["cut.pkl"]  # no lock file left
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    m = os.umask(0)
    os.umask(m)
    return m


def test_a_cut_merge_is_finished_by_a_single_process_resume(tiny_dir, mi, tmp_path):
    from model_inspector.run.distributed import run_distributed

    full = run_profiling(_samples(), _cfg(tiny_dir), tmp_path / "full.pkl", load_inspector=lambda: mi, progress=False)
    out = tmp_path / "dp.pkl"
    for rank in range(2):
        run_profiling(_samples(), _cfg(tiny_dir), shard_path(out, rank, 2), load_inspector=lambda: mi,
                      shard=(rank, 2), finalize=False, progress=False)

    def die(path, state):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        merge_shards(out, 2, save=die)
    assert not out.exists() and PartsStore(shard_path(out, 0, 2)).exists()
    with pytest.raises(FileExistsError, match="unfinished 2-process run"):
        run_distributed(_samples(), _cfg(tiny_dir), out, load_inspector=lambda dev: mi, progress=False)
    merged = run_distributed(_samples(), _cfg(tiny_dir), out, load_inspector=lambda dev: 1 / 0, resume=True,
                             progress=False)
    same_results(full, merged)
    same_results(full, load_results(out))
    assert not PartsStore(shard_path(out, 0, 2)).dir.exists() and not PartsStore(shard_path(out, 1, 2)).dir.exists()


def test_a_full_disk_keeps_every_completed_batch(tmp_path, stories_file, tiny_dir):
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(mnt)], check=True)
    try:
        args = ["run_experiments_ts.py", tiny_dir, "tinystories", "--n_stories", 3, "--data_file", stories_file,
                "--max_len", 3, "--batch_size", 4, "--update_steps", 4, "--no_progress", "--seed", 3,
                "--metrics", "shannon", "renyi:2", "renyi:3", "renyi:5",
                "--threads", 1]  # pinned: 1- and 2-thread BLAS differ by ~1e-7 nats, and the default follows the load
        proc = run_script(*args, "--results_dir", mnt, check=False)
        line = one_line_error(proc, "No space left on device", "completed before are safe in", "--resume")
        out = mnt / "tiny-llama_tinystories_3.pkl"
        partial = load_results(out)
        n = len(partial["entropy"])
        assert 0 < n < 72 and n % 4 == 0 and partial["metadata"]["complete"] is False, (n, line)
        # free space (move the run elsewhere) and resume: equal to an uninterrupted run
        big = tmp_path / "big"
        shutil.copytree(mnt, big)
        run_script(*args, "--results_dir", big, "--resume")
        run_script(*args, "--results_dir", tmp_path / "ref")
        same_results(load_results(tmp_path / "ref" / out.name), load_results(big / out.name))
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


# ----------------------------------------------------------------------------------------- preflight
def test_output_problems_are_found_before_the_model_loads(tmp_path, stories_file):
    base = ["run_experiments_ts.py", "no-such-model-xyz", "tinystories", "--n_stories", 1, "--data_file", stories_file,
            "--no_progress"]
    (tmp_path / "afile").write_text("x")
    one_line_error(run_script(*base, "--results_dir", tmp_path / "afile", check=False), "is a file")
    (tmp_path / "d" / "no-such-model-xyz_tinystories_1.pkl").mkdir(parents=True)
    one_line_error(run_script(*base, "--results_dir", tmp_path / "d", check=False), "is a folder")
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=16k", "tmpfs", str(ro)], check=True)
    try:
        one_line_error(run_script(*base, "--results_dir", ro, check=False), "cannot write in", "Read-only")
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def test_evaluation_scripts_write_to_out_dir(tiny_dir, stories_file, tmp_path):
    run_script("run_experiments_ts.py", tiny_dir, "tinystories", "--n_stories", 2, "--data_file", stories_file,
               "--max_len", 2, "--results_dir", tmp_path / "r", "--no_progress")
    run_script("run_tests.py", tmp_path / "r" / "tiny-llama_tinystories_2.pkl", "--label", "prompt", "--folds", 3,
               "--k", 5, "--out_dir", tmp_path / "eval")
    assert (tmp_path / "eval" / "tiny-llama_tinystories_2_tm_prompt_k5_3fold_overall.csv").exists()
    assert not list((tmp_path / "r").glob("*_tm_*"))
    (tmp_path / "f").write_text("x")
    one_line_error(run_script("run_tests.py", tmp_path / "r" / "tiny-llama_tinystories_2.pkl", "--out_dir",
                              tmp_path / "f", check=False), "is a file")


# ----------------------------------------------------------------------------------------- validated data
def _mmlu_row(**kw):
    return {"question": "What is 2+2?", "subject": "math", "choices": ["1", "2", "3", "4"], "answer": 3, **kw}


@pytest.mark.parametrize("bad, msg", [
    ({"answer": 2.7}, "answer must be an integer 0-3 or a letter A-D (got float 2.7)"),
    ({"answer": True}, "answer must be an integer 0-3 or a letter A-D (got bool True)"),
    ({"answer": 4}, "answer must be an integer 0-3"),
    ({"answer": "E"}, "answer must be an integer 0-3"),
    ({"question": None}, "question must be a string (got NoneType None)"),
    ({"subject": ""}, "subject is empty"),
    ({"choices": ["a", "b", "c"]}, "choices must be 4 strings"),
    ({"choices": ["a", "b", "c", 4]}, "choices must be 4 strings"),
])
def test_bad_mmlu_rows_name_file_and_line(bad, msg, tmp_path):
    from model_inspector.experiments.mmlu import load_mmlu
    from model_inspector.readers import DataError

    f = tmp_path / "m.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in [_mmlu_row(), _mmlu_row(**bad), _mmlu_row(**bad)]) + "\n")
    with pytest.raises(DataError) as exc:
        load_mmlu(str(f))
    assert str(exc.value).startswith(f"{f}:2: {msg}") and "2 bad rows in all" in str(exc.value)
    stats = {}
    rows = load_mmlu(str(f), skip_bad_rows=True, stats=stats)
    assert len(rows) == 1 and stats["n_bad_rows"] == 2


def test_mmlu_letters_and_csv(tmp_path):
    import pandas as pd

    from model_inspector.experiments.mmlu import load_mmlu

    f = tmp_path / "m.jsonl"
    f.write_text(json.dumps(_mmlu_row(answer="B")) + "\n")
    assert load_mmlu(str(f))[0]["answer"] == 1
    csv = tmp_path / "m.csv"
    pd.DataFrame([{**_mmlu_row(), "choices": json.dumps(["1", "2", "3", "4"])}]).to_csv(csv, index=False)
    assert load_mmlu(str(csv))[0]["choices"] == ["1", "2", "3", "4"]
    cols = tmp_path / "cols.csv"
    pd.DataFrame([{"question": "q?", "subject": "s", "A": "w", "B": "x", "C": "y", "D": "z", "answer": "C"}]).to_csv(
        cols, index=False)
    assert load_mmlu(str(cols))[0] == {"question": "q?", "subject": "s", "choices": ["w", "x", "y", "z"], "answer": 2,
                                       "index": 0}


@pytest.mark.parametrize("bad_line, says", [('{"text": null}', "text must be a string (got NoneType None)"),
                                             ("{oops", "line 2 is not valid JSON")], ids=["null-text", "not-json"])
def test_bad_story_rows(bad_line, says, tmp_path, tiny_dir):
    """A bad row is one line naming file:line; --skip_bad_rows skips it (also a line that is not JSON) and counts it."""
    f = tmp_path / "s.jsonl"
    f.write_text('{"text": "A story."}\n' + bad_line + '\n{"text": "Another."}\n')
    args = ["run_experiments_ts.py", tiny_dir, "tinystories", "--n_stories", 2, "--data_file", f, "--max_len", 2,
            "--results_dir", tmp_path, "--no_progress"]
    one_line_error(run_script(*args, check=False), f"{f}:2: {says}")
    ok = run_script(*args, "--skip_bad_rows")
    assert "skipped 1 bad rows" in ok.stdout
    data = load_results(tmp_path / "tiny-llama_tinystories_2.pkl")
    assert data["metadata"]["n_bad_rows"] == 1 and "None" not in "".join(data["input"])


# ----------------------------------------------------------------------------------------- names
def test_local_folder_wins_over_an_alias(tmp_path, tiny_dir, capsys):
    import model_manager

    local = tmp_path / "smollm2-135m-instruct"
    shutil.copytree(tiny_dir, local)
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert model_manager.resolve_name("smollm2-135m-instruct") == ("dir", "smollm2-135m-instruct")
    finally:
        os.chdir(old)
    assert "is a local folder and also a model alias" in capsys.readouterr().err
    assert model_manager.resolve_name("smollm2-135m-instruct") == ("embedded", "smollm2-135m-instruct")


def test_npz_suffix_and_foreign_pickles(tmp_path, capsys):
    import pickle

    from model_inspector.results.layouts import save_npz

    data = {"entropy": [np.ones((2, 3), np.float32)], "text": ["x"], "metadata": {"format": "entropy-lens-results"}}
    save_npz(tmp_path / "a.NPZ", data)
    assert (tmp_path / "a.NPZ").read_bytes()[:2] == b"PK"  # a zip, not a pickle
    assert load_results(tmp_path / "a.NPZ")["text"] == ["x"]
    (tmp_path / "orig.pkl").write_bytes(pickle.dumps({"entropy": [np.ones((2, 3))], "prompt": ["p"]}))
    load_results(tmp_path / "orig.pkl")
    assert "not written by entropy-lens" in capsys.readouterr().err
    (tmp_path / "ours.pkl").write_bytes(pickle.dumps(data))
    load_results(tmp_path / "ours.pkl")
    assert "not written by entropy-lens" not in capsys.readouterr().err


def test_no_lock_file_is_left_by_a_finished_a_refused_or_a_failed_run(tmp_path, stories_file, tiny_dir):
    base = ["run_experiments_ts.py", tiny_dir, "tinystories", "--n_stories", 1, "--data_file", stories_file,
            "--max_len", 2, "--results_dir", tmp_path, "--no_progress"]
    run_script(*base)
    run_script(*base, check=False)  # refused: the file exists
    run_script(*base, "--metrics", "renyi:-1", check=False)  # refused before it starts
    run_script(*base, "--n_stories", 9, "--overwrite", check=False)  # fails: too few stories
    assert not list(tmp_path.glob(".*.lock")), list(tmp_path.iterdir())


