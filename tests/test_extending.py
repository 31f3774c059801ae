"""The "where to add" recipes of ARCHITECTURE.md, each exercised: a metric (test_package.py), an experiment, an
option, a results field and an architecture rule are each one declaration, and everything else follows."""

import json

import numpy as np
import pytest

from model_inspector.cli import main as cli_main


def _run_cli(argv, capsys):
    """``entropy-lens ARGV`` in this process: ``(exit code, stdout, stderr)``."""
    with pytest.raises(SystemExit) as exc:
        cli_main(list(map(str, argv)))
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def words_file(tmp_path):
    p = tmp_path / "words.jsonl"
    p.write_text("".join(json.dumps({"text": w}) + "\n" for w in ["cat", "elephant", "dog", "giraffe", "ox", "hippo"]))
    return p


# ----------------------------------------------------------------------------------------- an experiment
def test_a_toy_experiment_is_one_registration(tiny_dir, words_file, tmp_path, capsys):
    """A few lines (rows, a prompt, a label) make an experiment that runs through the CLI, resumes and explores."""
    from model_inspector.experiments import Experiment, Sample, register_experiment, unregister_experiment
    from model_inspector.readers import DataSource, Record, Text

    @register_experiment
    class Toy(Experiment):
        """Toy: ask the model to say each word; label: short or long word."""

        name = "toy"
        source = DataSource(Record({"text": Text()}), help="words (jsonl with a 'text' column)")
        columns = {"kind": "short (< 5 letters) or long"}

        def samples(self, rows, args):
            return [Sample(f"Say {r['text']}:", {"kind": "short" if len(r["text"]) < 5 else "long"}) for r in rows], {}

    try:
        argv = ["run", "toy", tiny_dir, "--data_file", words_file, "--results_dir", tmp_path, "--max_len", 3,
                "--batch_size", 4, "--no_progress", "--keep_top_tokens", 1]
        code, out, err = _run_cli(argv, capsys)
        assert code == 0, err
        path = tmp_path / "tiny-llama_toy.pkl"
        assert "wrote" in out and path.exists()
        from model_inspector import Results

        res = Results.load(path)
        assert len(res) == 6 and res["kind"] == ["short", "long", "short", "long", "short", "long"]
        assert res.profiles().shape == (6, 3, 3) and res.metadata["identity"]["dataset"] == "toy"
        before = path.read_bytes()
        code, _, err = _run_cli(argv + ["--resume"], capsys)  # a complete file: resume leaves it as it is
        assert code == 0 and path.read_bytes() == before, err
        code, _, err = _run_cli(argv[:-2] + ["--keep_top_tokens", 0, "--resume"], capsys)
        assert code == 2 and "keep_top_tokens: file 1 vs now 0" in _one_error_line(err)
        code, _, err = _run_cli(["explore", path, "--out", tmp_path / "toy.html"], capsys)
        assert code == 0, err
        page = (tmp_path / "toy.html").read_text()
        assert "tiny-llama_toy.pkl" in page and '"kind"' in page
    finally:
        unregister_experiment("toy")
    code, _, err = _run_cli(["run", "toy", tiny_dir], capsys)
    assert code == 2 and "unknown experiment 'toy'" in _one_error_line(err)


# ----------------------------------------------------------------------------------------- an option
def test_an_identity_option_is_one_declaration(tiny_dir, words_file, tmp_path, capsys):
    """One register_option: the flag exists in every profiling command, a bad value is refused once with one line,
    the value is in the run identity, and --resume with it changed is refused."""
    from model_inspector.options import Integer, Option, register_option, unregister_option

    register_option(Option("toy_knob", 0, "a toy setting that changes the numbers", Integer(min=0, max=3),
                           identity=True, legacy=0))
    try:
        for cmd in (["run", "tinystories"], ["profile-mmlu"], ["formats"]):
            code, out, _ = _run_cli(cmd + ["--help"], capsys)
            assert code == 0 and "--toy_knob" in out, cmd
        stories = tmp_path / "s.jsonl"
        stories.write_text(json.dumps({"text": "Tom had a red ball."}) + "\n")
        base = ["profile-ts", tiny_dir, "tinystories", "--n_stories", 1, "--data_file", stories, "--max_len", 2,
                "--results_dir", tmp_path, "--no_progress"]
        code, _, err = _run_cli(base + ["--toy_knob", 7], capsys)
        assert code == 2 and "--toy_knob must be an integer from 0 to 3 (got 7)" in _one_error_line(err)
        code, _, err = _run_cli(base + ["--toy_knob", 1], capsys)
        assert code == 0, err
        from model_inspector import Results

        res = Results.load(tmp_path / "tiny-llama_tinystories_1.pkl")
        assert res.metadata["identity"]["toy_knob"] == 1 and res.metadata["config"]["toy_knob"] == 1
        code, _, err = _run_cli(base + ["--toy_knob", 2, "--resume"], capsys)
        assert code == 2 and "toy_knob: file 1 vs now 2" in _one_error_line(err)
    finally:
        unregister_option("toy_knob")


def test_an_option_older_files_do_not_record_takes_its_legacy_value():
    from model_inspector.options import Integer, Option, register_option, unregister_option
    from model_inspector.run.config import RunIdentity

    register_option(Option("toy_knob", 0, "a toy setting", Integer(min=0), identity=True, legacy=0))
    try:
        now = RunIdentity({"toy_knob": 0, "max_len": 3})
        assert now.differences({"max_len": 3}) == []  # written before the option existed: it was 0 then
        assert now.differences({"max_len": 3, "toy_knob": 2}) == ["toy_knob: file 2 vs now 0"]
    finally:
        unregister_option("toy_knob")


# ----------------------------------------------------------------------------------------- a results field
@pytest.mark.parametrize("suffix", [".pkl", ".npz"])
@pytest.mark.parametrize("layout", ["samples", "format_records"])
def test_a_new_column_survives_every_layout(layout, suffix, tmp_path):
    """A per-sample column an experiment declares (here: ``mood``) is kept by every layout, the formats records
    included (their columns are not a fixed list)."""
    from model_inspector import Results

    rng = np.random.default_rng(0)
    cols = {"input": ["a", "b", "c"], "text": ["x", "y", "z"], "model": ["m"] * 3, "format": ["chat", "poem", "chat"],
            "topic": ["t1", "t2", "t3"], "mood": ["calm", "wild", "calm"], "sample_index": [0, 1, 2],
            "entropy": [rng.random((2, 4)).astype(np.float32) for _ in range(3)],
            "renyi_0.5": [rng.random((2, 4)).astype(np.float32) for _ in range(3)]}
    meta = {"format": "entropy-lens-results", "complete": True, "alphas": [0.5, 1.0], "layout": layout}
    path = tmp_path / f"r{suffix}"
    Results(cols, meta).to_pickle(path)
    back = Results.load(path)
    assert back["mood"] == ["calm", "wild", "calm"] and back["format"] == cols["format"]
    np.testing.assert_array_equal(back.profiles("renyi_0.5"), np.stack(cols["renyi_0.5"]))
    if layout == "format_records" and suffix == ".pkl":
        df = back.to_records()
        assert "mood" in df.columns and len(df) == 6


# ----------------------------------------------------------------------------------------- an architecture rule
def test_a_lens_spec_registered_for_a_model_type_is_used_and_checked(tok):
    from model_inspector import LensResolutionError, LensSpec, ModelInspector
    from model_inspector.architecture import LENS_SPECS, register_lens_spec
    from model_inspector.testing import tiny_model

    spec = register_lens_spec("llama", LensSpec(blocks="model.layers", final=["model.norm"], head="lm_head"))
    try:
        mi = ModelInspector(tiny_model("llama"), tok)
        assert mi.lens.spec is spec and mi.lens.describe().startswith("3 blocks at 'model.layers'")
        register_lens_spec("llama", LensSpec(final=[]))  # a wrong rule fails the load check with one message
        with pytest.raises(LensResolutionError, match="does not reproduce"):
            ModelInspector(tiny_model("llama"), tok)
    finally:
        LENS_SPECS.pop("llama", None)


def test_lens_spec_flag(tiny_dir, tmp_path, capsys):
    spec_file = tmp_path / "myspec.py"
    spec_file.write_text("from model_inspector import LensSpec\nSPEC = LensSpec(final=['model.norm'])\nNOT = 3\n")
    stories = tmp_path / "s.jsonl"
    stories.write_text(json.dumps({"text": "Tom had a red ball."}) + "\n")
    base = ["profile-ts", tiny_dir, "tinystories", "--n_stories", 1, "--data_file", stories, "--max_len", 2,
            "--results_dir", tmp_path, "--no_progress"]
    code, _, err = _run_cli(base + ["--lens_spec", f"{spec_file}:SPEC"], capsys)
    assert code == 0, err
    from model_inspector import Results

    ident = Results.load(tmp_path / "tiny-llama_tinystories_1.pkl").metadata["identity"]
    assert ident["lens_spec"] == f"{spec_file}:SPEC"
    code, _, err = _run_cli(base + ["--lens_spec", f"{spec_file}:NOT", "--overwrite"], capsys)
    assert code == 2 and "is int, not a LensSpec" in _one_error_line(err)
    code, _, err = _run_cli(base + ["--lens_spec", "nope", "--overwrite"], capsys)
    assert code == 2 and "--lens_spec must look like module:NAME" in _one_error_line(err)
