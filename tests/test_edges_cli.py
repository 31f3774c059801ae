"""Every traceback and unclear line becomes one clear line with a flag that exists; CSV cells parsed as written; one
process converts a GGUF model while the others wait."""

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import never_load, run_config, run_samples, same_results

from model_inspector.errors import ResultsFileError
from model_inspector.results import load_results
from model_inspector.run.loop import run_profiling
from model_inspector.storage import PartsStore

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")
_samples = run_samples


def _cfg(model, **kw):
    return run_config(model, max_len=2, **kw)


def cli(capsys, experiment, *argv, code=2):
    """Run ``entropy-lens run EXPERIMENT`` (the paper's script style) in-process; return its one ``error:`` line."""
    from model_inspector.commands.run import main

    return one_line(capsys, lambda: main([str(a) for a in argv], experiment=experiment, style="script"), code=code)


def one_line(capsys, fn, code=2):
    """What the command line reports for ``fn()`` (through ``run_main``): exactly one ``error:`` line, no traceback."""
    from model_inspector.cli import run_main

    capsys.readouterr()
    with pytest.raises(SystemExit) as done:  # any exception but a user error would escape here, and fail the test
        run_main(fn)
    err = capsys.readouterr().err
    assert done.value.code == code, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def _ts(model, stories_file, out_dir, *extra):
    return ("tinystories", model, "tinystories", "--n_stories", 1, "--data_file", stories_file, "--max_len", 2,
            "--results_dir", out_dir, "--no_progress", *extra)


# ------------------------------------------------------------------------------------------- 7. one clear line
def _absent_cuda() -> str:
    return f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"


@pytest.mark.parametrize("device, says", [
    (None, "this machine has no such device"), ("cuda:7", "this machine has no such device"),
    ("tpu", "is not a device name"), ("mps", None), ("xpu", None)])
def test_a_device_this_machine_lacks_is_one_line(device, says, capsys, tiny_dir, stories_file, tmp_path):
    from model_inspector.loading import _mps_available

    if device == "mps" and _mps_available() or device == "xpu" and getattr(torch, "xpu", None) is not None \
            and torch.xpu.is_available():
        device = "tpu"  # this machine has it: ask for one it lacks instead
    device = device or _absent_cuda()
    line = cli(capsys, *_ts(tiny_dir, stories_file, tmp_path, "--device", device))
    assert f"--device {device}" in line or f"--device {device!r}" in line
    assert says is None or says in line
    assert "use --device auto" in line or "use auto, cpu, cuda" in line
    assert not any(tmp_path.iterdir())  # refused before any work


@pytest.mark.parametrize("device_map, says", [
    ("{bad", "is not valid JSON"), ("bad", "neither a keyword nor a device"), ("[1, 2]", "must be a JSON object")])
def test_a_bad_device_map_is_one_line_before_any_work(device_map, says, capsys, tiny_dir, stories_file, tmp_path):
    line = cli(capsys, *_ts(tiny_dir, stories_file, tmp_path, "--device_map", device_map))
    assert says in line and "--device_map" in line
    assert not any(tmp_path.iterdir())


def test_a_negative_seed_is_refused_as_a_flag(capsys, tiny_dir, shared_data, tmp_path):
    line = cli(capsys, "mmlu", tiny_dir, "mmlu", "--n_questions", 3, "--seed", -1, "--data_file",
               shared_data / "mmlu_test.jsonl", "--results_dir", tmp_path)
    assert line == "error: --seed must be an integer >= 0 (got -1)"


def test_a_sidecar_meta_that_is_not_an_object_is_one_line(capsys, tiny_dir, stories_file, tmp_path):
    sidecar = tmp_path / "tiny-llama_tinystories_1.pkl.parts"
    sidecar.mkdir()
    (sidecar / "meta.json").write_text("[1, 2, 3]")
    line = cli(capsys, *_ts(tiny_dir, stories_file, tmp_path, "--resume"))
    assert "meta.json holds a JSON list, not the run's metadata" in line and "--overwrite" in line


def test_an_npz_with_an_object_array_is_one_line(capsys, tmp_path):
    from model_inspector.cli import run_main
    from model_inspector.commands import evaluate

    path = tmp_path / "x.npz"
    np.savez(path, **{"arr:entropy": np.array([np.zeros((2, 3)), np.zeros((1, 3))], dtype=object),
                      "__metadata__": np.array("{}")})
    with pytest.raises(ResultsFileError, match="entry 'arr:entropy' is an object array"):
        load_results(path)
    with pytest.raises(SystemExit) as done:
        run_main(lambda: evaluate.main([str(path)]))
    err = capsys.readouterr().err
    assert done.value.code == 2 and "Traceback" not in err and "is an object array" in err


def test_a_sidecar_name_taken_by_a_file_is_found_in_the_preflight(capsys, stories_file, tmp_path):
    (tmp_path / "no-such-model-xyz_tinystories_1.pkl.parts").write_text("not a folder")
    line = cli(capsys, *_ts("no-such-model-xyz", stories_file, tmp_path))  # the model is never looked up
    assert "no-such-model-xyz_tinystories_1.pkl.parts is a file" in line and "move the file aside" in line


def test_an_existing_file_is_not_called_a_storage_failure(capsys, tiny_dir, stories_file, tmp_path):
    from model_inspector.cli import run_main
    from model_inspector.commands.run import main

    with pytest.raises(SystemExit):
        run_main(lambda: main([str(a) for a in _ts(tiny_dir, stories_file, tmp_path)[1:]], experiment="tinystories",
                              style="script"))
    capsys.readouterr()
    line = cli(capsys, *_ts(tiny_dir, stories_file, tmp_path))
    assert "tiny-llama_tinystories_1.pkl is already complete (24 samples): pass --overwrite to make it again" in line
    assert line.endswith("(--resume has nothing to add)")
    assert "free space" not in line and "cannot write" not in line


def test_a_damaged_part_names_itself_and_the_intact_rows(tiny_dir, mi, tmp_path, capsys):
    out = tmp_path / "r.pkl"
    full = run_profiling(_samples(), _cfg(tiny_dir), tmp_path / "full.pkl", load_inspector=lambda: mi,
                         progress=False)

    def killed(path, state):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_profiling(_samples(), _cfg(tiny_dir), out, load_inspector=lambda: mi, update_steps=8, save=killed,
                      progress=False)
    parts = PartsStore(out).parts()
    assert len(parts) == 3
    parts[1].write_bytes(parts[1].read_bytes()[:50])  # truncated
    msg = one_line(capsys, lambda: run_profiling(_samples(), _cfg(tiny_dir), out, load_inspector=never_load, resume=True,
                                                  progress=False))
    assert f"{parts[1]} is damaged" in msg and "the 8 rows of the 1 part(s) before it are intact" in msg
    assert "and the 1 part(s) after it" in msg and "--resume" in msg and "--overwrite" not in msg
    # following the advice redoes only those rows
    aside = tmp_path / "aside"
    aside.mkdir()
    for p in parts[1:]:
        shutil.move(p, aside / p.name)
    assert PartsStore(out).read_meta()["complete"] is True  # marked complete, but the rows say otherwise
    resumed = run_profiling(_samples(), _cfg(tiny_dir), out, load_inspector=lambda: mi, resume=True, progress=False)
    same_results(full, resumed)


def test_resuming_a_version_3_file_says_why_it_cannot_be_continued(capsys, tiny_dir, stories_file, tmp_path):
    out = tmp_path / "tiny-llama_tinystories_1.pkl"
    from model_inspector.cli import run_main
    from model_inspector.commands.run import main

    with pytest.raises(SystemExit):
        run_main(lambda: main([str(a) for a in _ts(tiny_dir, stories_file, tmp_path)[1:]], experiment="tinystories",
                              style="script"))
    data = pickle.loads(out.read_bytes())
    data["metadata"]["format_version"] = 3
    data["metadata"]["complete"] = False
    data["metadata"]["identity"].pop("batch_order")
    out.write_bytes(pickle.dumps(data))
    capsys.readouterr()
    line = cli(capsys, *_ts(tiny_dir, stories_file, tmp_path, "--resume"))
    assert "format version 3: files of format version < 4 cannot be continued exactly" in line
    assert "--overwrite" in line and "(not recorded)" not in line


def test_an_interrupt_before_the_first_batch_writes_no_file(tiny_dir, mi, tmp_path, capsys):
    class Stopped:
        def __getattr__(self, name):
            return getattr(mi, name)

        def profile(self, *a, **kw):
            raise KeyboardInterrupt

    out = tmp_path / "r.pkl"
    line = one_line(capsys, lambda: run_profiling(_samples(), _cfg(tiny_dir), out, load_inspector=lambda: Stopped(),
                                                   progress=False), code=130)
    assert "interrupted before the first batch finished: nothing was finished" in line
    assert not out.exists() and PartsStore(out).exists() and not PartsStore(out).parts()
    with pytest.raises(ResultsFileError, match="has finished no rows; continue it with --resume"):
        load_results(out)
    done = run_profiling(_samples(), _cfg(tiny_dir), out, load_inspector=lambda: mi, resume=True, progress=False)
    assert len(done["entropy"]) == 24


def test_a_folder_that_is_not_a_model_folder(capsys, stories_file, tmp_path):
    from model_inspector.loading import ModelNotFoundError, model_source

    (tmp_path / "empty").mkdir()
    line = cli(capsys, *_ts(tmp_path / "empty", stories_file, tmp_path / "out"))
    assert "is a folder but not a model folder (no config.json)" in line
    with pytest.raises(ModelNotFoundError, match="not a model folder"):
        model_source("..")


# ------------------------------------------------------------------------------------------- 8. CSV cells
def _mmlu_csv(path: Path, rows: list[dict]) -> Path:
    cols = ["question", "subject", "A", "B", "C", "D", "answer"]
    lines = [",".join(cols)] + [",".join(str(r.get(c, "")) for c in cols) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _q(**kw):
    return {"question": "What is two plus two?", "subject": "math", "A": "1", "B": "4", "C": "3", "D": "5",
            "answer": "1", **kw}


def test_csv_cells_are_parsed_as_written(tmp_path):
    from model_inspector.experiments.mmlu import load_mmlu
    from model_inspector.readers import DataError

    f = _mmlu_csv(tmp_path / "m.csv", [_q(), _q(answer="B"), _q(answer="3")])
    assert [r["answer"] for r in load_mmlu(str(f))] == [1, 1, 3]
    for bad, shown in (("1.0", "'1.0'"), ("b", "'b'"), (" B ", "' B '"), ("7", "'7'")):
        g = _mmlu_csv(tmp_path / "bad.csv", [_q(), _q(answer=bad)])
        with pytest.raises(DataError) as info:
            load_mmlu(str(g))
        assert str(info.value).startswith(f"{g}:3: answer must be an integer 0-3 or a letter A-D (got {shown})")
        assert "float" not in str(info.value)


def test_csv_bad_rows_are_only_the_bad_ones(tmp_path):
    from model_inspector.experiments.mmlu import load_mmlu

    f = _mmlu_csv(tmp_path / "m.csv", [_q(), _q(question=""), _q(answer="1.0"), _q(answer="2", subject="bio")])
    stats = {}
    rows = load_mmlu(str(f), skip_bad_rows=True, stats=stats)
    assert [(r["answer"], r["subject"]) for r in rows] == [(1, "math"), (2, "bio")] and stats["n_bad_rows"] == 2


# ------------------------------------------------------------------------------------------- 9. one conversion
def test_two_processes_converting_at_once_convert_once(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"\0" * 4096)
    target = tmp_path / "cache" / "converted" / "m"
    log = tmp_path / "log"
    code = (
        "import sys, time, json\n"
        "from pathlib import Path\n"
        "from model_inspector.loading import ensure_converted\n"
        "def fake(gguf, out):\n"
        "    with open(sys.argv[2], 'a') as fh: fh.write('convert\\n')\n"
        "    time.sleep(1.5)\n"
        "    out.mkdir(parents=True); (out / 'config.json').write_text('{}')\n"
        "print(ensure_converted(Path(sys.argv[1]), Path(sys.argv[3]), convert=fake))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(target), str(log), str(gguf)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert log.read_text() == "convert\n"  # one conversion; the other process waited and used it
    said = [o for o, _ in outs]
    assert sum(f"converting {gguf} once into {target} (about 1 s)..." in o for o in said) == 1
    assert all(o.strip().endswith(str(target)) for o in said)
