"""One finalisation sequence: a kill at any named point of the final write (one process) or of the merge (two
processes), then ``--resume``, ends with the complete file, equal to an uninterrupted run, and nothing else beside it.

The kill is real: ``ENTROPY_LENS_KILL_AT=<point>`` makes the process SIGKILL itself there (model_inspector.storage).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import same_results

from model_inspector.results import load_results
from model_inspector.storage import KILL_ENV, KILL_POINTS, PartsStore

ROOT = Path(__file__).resolve().parents[1]
NAME = "tiny-llama_tinystories_1.pkl"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _args(tiny_dir, stories_file, mode, out_dir):
    return ["run_experiments_ts.py", str(tiny_dir), "tinystories", "--n_stories", "1", "--data_file", str(stories_file),
            "--max_len", "2", "--batch_size", "4", "--update_steps", "8", "--seed", "3", "--no_progress",
            "--results_dir", str(out_dir), *(["--greedy"] if mode == "greedy" else [])]


def _run(args, launcher=(), kill=None, timeout=600):
    env = dict(ENV)
    env.pop(KILL_ENV, None)
    if kill:
        env[KILL_ENV] = kill
    cmd = [*launcher, *args] if launcher else [sys.executable, *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def reference(tiny_dir, stories_file, tmp_path_factory):
    out = {}
    for mode in ("greedy", "sampled"):
        d = tmp_path_factory.mktemp(f"ref-{mode}")
        proc = _run(_args(tiny_dir, stories_file, mode, d))
        assert proc.returncode == 0, proc.stderr
        out[mode] = load_results(d / NAME)
    return out


def _listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_the_kill_points_are_named():
    assert {"before_final_write", "during_final_write", "after_final_rename", "during_sidecar_removal",
            "during_merge_write", "after_merge"} <= set(KILL_POINTS)


#: what a kill at each point leaves on disk (besides the lock): (the .pkl exists, the sidecar exists, a .tmp, a
#: tombstone)
LEFT = {"before_final_write": (False, True, False, False), "during_final_write": (False, True, True, False),
        "after_final_rename": (True, True, False, False), "during_sidecar_removal": (True, False, False, True)}


@pytest.mark.parametrize("mode", ["greedy", "sampled"])
@pytest.mark.parametrize("point", list(LEFT))
def test_a_kill_in_the_final_sequence_then_resume_gives_the_complete_file(point, mode, tiny_dir, stories_file,
                                                                         reference, tmp_path):
    args = _args(tiny_dir, stories_file, mode, tmp_path)
    killed = _run(args, kill=point)
    assert killed.returncode == -9, killed.stderr[-2000:]
    out = tmp_path / NAME
    names = _listing(tmp_path)
    left = (out.exists(), PartsStore(out).dir.exists(), any(n.endswith(".tmp") for n in names),
            any(".removing-" in n for n in names))
    assert left == LEFT[point], names
    if out.exists():  # the file in place is already the complete one
        same_results(reference[mode], load_results(out))
    resumed = _run([*args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"wrote {out} (24 samples" in resumed.stdout
    back = load_results(out)
    same_results(reference[mode], back)
    assert back["metadata"]["complete"] is True and len(back["entropy"]) == 24
    # no sidecar, tombstone or temporary left: a later run finds a finished file, not "an unfinished run"
    assert _listing(tmp_path) == [NAME]


def test_a_kill_during_the_sidecar_removal_of_an_mmlu_run_reports_the_file_on_disk(tiny_dir, shared_data, tmp_path):
    args = ["run_experiments.py", str(tiny_dir), "mmlu", "--n_questions", "15", "--data_file",
            str(shared_data / "mmlu_test.jsonl"), "--max_len", "2", "--batch_size", "4", "--update_steps", "4",
            "--no_progress", "--results_dir", str(tmp_path)]
    ref = _run([*args[:-1], str(tmp_path / "ref")])
    assert ref.returncode == 0, ref.stderr
    killed = _run(args, kill="during_sidecar_removal")
    assert killed.returncode == -9
    resumed = _run([*args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    out = tmp_path / "tiny-llama_mmlu_base_n15.pkl"
    data = load_results(out)
    n, acc = len(data["correct"]), sum(data["correct"]) / len(data["correct"])
    assert f"({n} samples, accuracy {acc:.3f}" in resumed.stdout and n == 14  # one question is over 1000 characters
    same_results(load_results(tmp_path / "ref" / out.name), data)


# ------------------------------------------------------------------------------------------- two processes
def _torchrun():
    return [str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", "2"]


@pytest.mark.parametrize("point, mode, resume_with", [
    ("during_merge_write", "sampled", 1),
    ("after_merge", "greedy", 2),
    ("during_sidecar_removal", "sampled", 2),
])
def test_a_kill_during_a_merge_then_resume(point, mode, resume_with, tiny_dir, stories_file, reference, tmp_path):
    args = _args(tiny_dir, stories_file, mode, tmp_path)
    killed = _run(args, launcher=_torchrun(), kill=point)
    assert killed.returncode != 0
    out = tmp_path / NAME
    names = _listing(tmp_path)
    if point == "during_merge_write":
        assert not out.exists() and any(n.endswith(".tmp") for n in names), names
    else:  # the merged file is in place; the shard sidecars (or one and a tombstone) are still there
        same_results(reference[mode], load_results(out))
        assert any(".shard" in n for n in names), names
    resumed = _run([*args, "--resume"], launcher=_torchrun() if resume_with == 2 else ())
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"wrote {out} (24 samples" in resumed.stdout
    same_results(reference[mode], load_results(out))
    assert _listing(tmp_path) == [NAME]
