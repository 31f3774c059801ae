"""Beyond one device: explicit device maps (accelerate) and data-parallel runs with accelerate launch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model_inspector import ModelInspector
from model_inspector.results import load_results

ROOT = Path(__file__).resolve().parents[1]
STORIES = ["Tom had a red ball. He liked it.", "Sue saw a cat. The cat was big.", "Ben went to the park."]


def test_multi_entry_device_map_gives_the_same_profiles(tiny_dir, tmp_path):
    import model_manager

    plain = ModelInspector(str(tiny_dir))
    device_map = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
                  "model.layers.2": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
    model, tok = model_manager.load_model(str(tiny_dir), device_map=device_map, offload_folder=tmp_path / "off")
    assert getattr(model, "hf_device_map", {}).get("model.layers.1") == "disk"
    sharded = ModelInspector(model, tok)  # the lens check passes through accelerate's offload hooks
    prompts = ["Hello world", "A longer prompt here."]
    a = plain.profile(prompts, max_len=4, metrics=["shannon", "kl_final"])
    b = sharded.profile(prompts, max_len=4, metrics=["shannon", "kl_final"])
    np.testing.assert_allclose(a.entropy, b.entropy, atol=1e-5)
    np.testing.assert_allclose(a.kl_final, b.kl_final, atol=1e-5)
    assert (a.token_ids == b.token_ids).all()


@pytest.mark.parametrize("launcher", ["accelerate", "torchrun"])
def test_two_processes_equal_one(launcher, tiny_dir, tmp_path):
    """accelerate launch --multi_gpu (torch.distributed.run underneath; gloo on CPU) and torchrun.
    (accelerate launch --cpu --num_processes 2 starts multi-CPU runs through mpirun only.)"""
    data = tmp_path / "s.jsonl"
    data.write_text("".join(json.dumps({"text": s}) + "\n" for s in STORIES))
    args = ["tinystories", "--n_stories", "3", "--data_file", str(data), "--max_len", "3", "--batch_size", "5",
            "--seed", "11", "--no_progress", "--update_steps", "5"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "run_experiments_ts.py", str(tiny_dir), *args, "--results_dir",
                          str(tmp_path / "one")], cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert one.returncode == 0, one.stderr
    bin_dir = Path(sys.executable).parent
    launch = ([str(bin_dir / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no"] if launcher == "accelerate"
              else [str(bin_dir / "torchrun"), "--nproc_per_node", "2"])
    two = subprocess.run([*launch, "run_experiments_ts.py", str(tiny_dir), *args, "--results_dir", str(tmp_path / "two")],
                         cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    name = "tiny-llama_tinystories_3.pkl"
    a, b = load_results(tmp_path / "one" / name), load_results(tmp_path / "two" / name)
    assert b["metadata"]["n_processes"] == 2 and b["metadata"]["complete"]
    # shards merged and their sidecars removed; only the output's (hidden, empty) lock file stays beside it
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [name]  # no lock file left
    assert set(a) == set(b)
    for key in a:
        if key == "metadata":
            continue
        assert len(a[key]) == len(b[key]) == 72
        for x, y in zip(a[key], b[key]):
            if isinstance(x, np.ndarray):
                np.testing.assert_array_equal(x, y)
            else:
                assert x == y


def test_distributed_resume_of_a_complete_file_checks_the_identity(tiny_dir, tmp_path):
    data = tmp_path / "s.jsonl"
    data.write_text("".join(json.dumps({"text": s}) + "\n" for s in STORIES))
    args = ["run_experiments_ts.py", str(tiny_dir), "tinystories", "--n_stories", "1", "--data_file", str(data),
            "--batch_size", "8", "--no_progress", "--results_dir", str(tmp_path)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, *args, "--max_len", "2"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert one.returncode == 0, one.stderr
    out = tmp_path / "tiny-llama_tinystories_1.pkl"
    before = out.read_bytes()
    torchrun = str(Path(sys.executable).parent / "torchrun")
    two = subprocess.run([torchrun, "--nproc_per_node", "2", *args, "--resume", "--max_len", "3", "--seed", "5"],
                         cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode != 0 and "settings differ" in two.stderr and "max_len: file 2 vs now 3" in two.stderr
    assert "seed: file 0 vs now 5" in two.stderr and out.read_bytes() == before
