"""The library as researchers install and extend it: a package, a console command, a metric registry."""

import os
import site
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_pip_install_in_a_fresh_venv_outside_the_repository(tmp_path):
    """pip install -e . into a new virtual environment; then, from another folder, import the package,
    load the embedded model, and run the console command. (The dependencies are taken from this
    environment through a .pth file, so that the test needs no download of torch.)"""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    inst = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "-e", str(ROOT)],
                          capture_output=True, text=True)
    assert inst.returncode == 0, inst.stderr[-2000:]
    away = tmp_path / "elsewhere"
    away.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    code = ("import model_inspector, model_manager; from model_inspector import ModelInspector; "
            "mi = ModelInspector('smollm2-135m-instruct'); print(mi.n_layers, model_inspector.__version__, "
            "model_manager.get_model_names(model_families=['gpt2'])[0])")
    run = subprocess.run([str(py), "-c", code], cwd=away, capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["30", model_version(), "gpt2-small"]
    cmd = subprocess.run([str(venv / "bin" / "entropy-lens"), "--help"], cwd=away, capture_output=True, text=True, env=env)
    assert cmd.returncode == 0 and "profile-ts" in cmd.stdout and "classify-formats" in cmd.stdout
    sub = subprocess.run([str(venv / "bin" / "entropy-lens"), "evaluate", "--help"], cwd=away, capture_output=True,
                         text=True, env=env)
    assert sub.returncode == 0 and "--out_dir" in sub.stdout


def model_version():
    import model_inspector

    return model_inspector.__version__


def test_console_command_mirrors_the_scripts(tmp_path):
    from model_inspector.cli import COMMANDS

    for name, (module, script, _) in COMMANDS.items():
        a = subprocess.run([sys.executable, "-m", "model_inspector", name, "--help"], capture_output=True, text=True)
        target = script.split() if script.startswith("-m ") else [str(ROOT / script)]
        b = subprocess.run([sys.executable, *target, "--help"], capture_output=True, text=True, cwd=ROOT)
        assert a.returncode == b.returncode == 0, (name, a.stderr, b.stderr)
        flags = lambda text: sorted(set(t for t in text.split() if t.startswith("--")))  # noqa: E731
        assert flags(a.stdout) == flags(b.stdout), name
    bad = subprocess.run([sys.executable, "-m", "model_inspector", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown subcommand 'nope'" in bad.stderr


def test_import_is_light():
    """``import model_inspector`` does not import torch (names load on first use)."""
    code = "import sys, model_inspector; print('torch' in sys.modules); model_inspector.Metric; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]


def test_a_new_metric_is_one_registry_entry(tok):
    """A toy metric, perplexity exp(H), added with one register_metric call, runs through the streamed
    lens, the profile API and the parser like the built-in ones."""
    from model_inspector import ModelInspector
    from model_inspector.metrics import MetricKind, Needs, parse_metric, register_metric, unregister_metric
    from model_inspector.testing import tiny_model

    register_metric(MetricKind("perplexity", aliases={"ppl": None}, unit="", key=lambda p: "perplexity",
                               definition=lambda p: "exp(-sum p log p)", needs=lambda p: Needs(t=True),
                               finalize=lambda stats, p: torch.exp(stats.shannon())))
    try:
        assert parse_metric("ppl").key == "perplexity" and parse_metric("perplexity").definition == "exp(-sum p log p)"
        mi = ModelInspector(tiny_model("llama"), tok)
        prof = mi.profile(["abc", "de"], max_len=3, metrics=["shannon", "ppl"])
        np.testing.assert_allclose(prof.metrics["perplexity"], np.exp(prof.entropy), rtol=1e-5)
    finally:
        unregister_metric("perplexity")
    with pytest.raises(ValueError, match="unknown metric 'ppl'"):
        parse_metric("ppl")


def test_lens_spec_overrides_resolution(tok):
    from model_inspector import LensResolutionError, LensSpec, ModelInspector
    from model_inspector.testing import tiny_model

    model = tiny_model("llama")
    auto = ModelInspector(model, tok)
    spec = LensSpec(blocks="model.layers", final=["model.norm"], head="lm_head", transforms=[])
    mi = ModelInspector(model, tok, lens_spec=spec)
    assert mi.lens.describe() == auto.lens.describe()
    np.testing.assert_array_equal(mi.profile(["abc"], max_len=2).entropy, auto.profile(["abc"], max_len=2).entropy)
    with pytest.raises(LensResolutionError, match="does not reproduce"):  # a wrong override fails the load check
        ModelInspector(model, tok, lens_spec=LensSpec(final=[]))
    assert "model.layers" in repr(mi.lens) and len(repr(mi.lens)) < 300


def test_decode_config_is_validated_once():
    from model_inspector import DecodeConfig, UserError

    for bad in (dict(max_len=0), dict(sample=True, temperature=0), dict(prepend_bos="maybe"),
                dict(keep_top_tokens=-1), dict(max_len=True)):
        with pytest.raises(UserError):
            DecodeConfig(**bad)
    assert DecodeConfig(max_len=4).as_dict()["prepend_bos"] == "auto"


def test_results_container(tmp_path):
    from model_inspector import Results

    r = Results({"entropy": [np.ones((2, 3), np.float32)] * 2, "prompt": ["a_x", "b_y"]}, {"complete": True})
    assert len(r) == 2 and r.metric_keys == ["entropy"] and r.label_keys == ["prompt"]
    assert r.profiles().shape == (2, 2, 3)
    r.to_pickle(tmp_path / "r.pkl")
    r.to_npz(tmp_path / "r.npz")
    for p in ("r.pkl", "r.npz"):
        back = Results.load(tmp_path / p)
        assert back["prompt"] == ["a_x", "b_y"] and back.metadata["complete"] is True
    assert list(r.to_pandas().columns) == ["entropy", "prompt"]
    assert "2 samples" in repr(r)
    with pytest.raises(ValueError, match="unequal length"):
        Results({"a": [1], "b": [1, 2]})


def test_user_errors_are_one_line_and_bugs_keep_their_traceback(tmp_path):
    code = ("from model_inspector.cli import run_main\n"
            "def main():\n    raise {}\n"
            "run_main(main)\n")
    user = subprocess.run([sys.executable, "-c", code.format("__import__('model_inspector').UserError('bad flag')")],
                          capture_output=True, text=True)
    assert user.returncode == 2 and user.stderr.strip() == "error: bad flag"
    bug = subprocess.run([sys.executable, "-c", code.format("ValueError('a bug')")], capture_output=True, text=True)
    assert bug.returncode == 1 and "Traceback" in bug.stderr and "ValueError: a bug" in bug.stderr


def test_the_readme_documents_every_flag_of_every_command():
    """README.md stays true: each flag of each entropy-lens subcommand (and of the paper's scripts) is named there."""
    import importlib
    import re

    from model_inspector.cli import COMMANDS
    from model_inspector.commands.run import build_parser as run_parser
    from model_inspector.experiments import get_experiment

    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"`(--?[a-zA-Z][\w-]*)", readme))
    missing = {}
    for name, (module, _, _) in COMMANDS.items():
        if name == "run":
            continue
        if module.startswith("run:"):
            parser = run_parser(get_experiment(module[4:]), style="script")
        else:
            mod = importlib.import_module("model_inspector.explore" if module == "explore"
                                          else f"model_inspector.commands.{module}")
            parser = mod.build_parser()
        flags = {o for a in parser._actions for o in a.option_strings if o not in ("-h", "--help")}
        if flags - documented:
            missing[name] = sorted(flags - documented)
    assert not missing, missing
