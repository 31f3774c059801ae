"""Model loading: aliases, local directories, GGUF, the embedded model, the model table."""

import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import model_manager
from model_manager import (
    ModelNotFoundError,
    ModelTableUpdateError,
    get_model_list,
    get_model_names,
    load_model,
    pick_dtype,
    resolve_name,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails (offline, as here and on CI)."""

    def refuse(*args, **kwargs):
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_alias_resolution():
    assert resolve_name("gemma-2-2b-it") == ("hub", "google/gemma-2-2b-it")
    assert resolve_name("gpt2-small") == ("hub", "gpt2")
    assert resolve_name("qwen3-1.7b") == ("hub", "Qwen/Qwen3-1.7B")
    assert resolve_name("pythia-1b") == ("hub", "EleutherAI/pythia-1b")
    assert resolve_name("meta-llama/Llama-3.2-1B-Instruct") == ("hub", "meta-llama/Llama-3.2-1B-Instruct")
    assert resolve_name("SmolLM2-135M-Instruct".lower()) == ("embedded", "smollm2-135m-instruct")
    assert resolve_name("gemma-3-270m") == ("embedded", "gemma-3-270m")
    assert resolve_name("some/file.gguf")[0] == "gguf"


def test_local_directory_loads_frozen(tmp_path):
    from tiny_models import char_tokenizer, tiny_model

    d = tmp_path / "tiny"
    tiny_model("qwen2").save_pretrained(d)
    char_tokenizer().save_pretrained(d)
    assert resolve_name(str(d)) == ("dir", str(d))
    model, tok = load_model(str(d), device="cpu", dtype="float32")
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert model.dtype == torch.float32 and tok.pad_token_id == 0
    model16, _ = load_model(str(d), device="cpu", dtype="bfloat16")
    assert model16.dtype == torch.bfloat16


def test_missing_model_message(no_network):
    with pytest.raises(ModelNotFoundError) as exc:
        load_model("no-such-org/no-such-model-xyz", device="cpu")
    msg = str(exc.value)
    assert "no-such-org/no-such-model-xyz" in msg and "hub may be unreachable" in msg and "local directory" in msg
    assert msg.count("\n") <= 3
    with pytest.raises(ModelNotFoundError, match="GGUF file not found"):
        load_model("/nonexistent/model.gguf")


def test_missing_model_cli_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "run_experiments.py"), "no-such-model-xyz", "mmlu",
                           "--data_file", str(ROOT.parent / "shared/data/mmlu_test.jsonl"), "--n_questions", "2",
                           "--results_dir", str(tmp_path), "--no_progress"],
                          capture_output=True, text=True, timeout=300,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    err = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "no-such-model-xyz" in err[0]


def test_model_table_filters():
    assert get_model_names(model_families=["gpt2"]) == ["gpt2-small", "gpt2-medium", "gpt2-large", "gpt2-xl"]
    small = get_model_names(max_size=1)
    assert "gpt2-small" in small and "gpt2-xl" not in small and "pythia-1b" in small
    everything = get_model_names(max_size=100)
    assert "gemma-2-27b" in everything and "gemma-2-27b" not in get_model_names()
    # the default list holds the embedded models and every model of the paper (2B-9B)
    for name in ("smollm2-135m-instruct", "gemma-3-270m", "qwen3-8b", "gemma-2-9b-it", "llama-3-8b-instruct"):
        assert name in get_model_names(), name
    table = model_manager.read_model_table()
    for col in ("alias", "hf_id", "family", "paper_family", "n_layers", "d_model", "d_vocab", "n_params", "size_b"):
        assert col in table
    assert {"smollm2-135m-instruct", "gemma-3-270m"} <= set(table["alias"])


def test_get_model_list_is_the_originals_dataframe():
    df = get_model_list()
    for col in ("model", "model_family", "model_size", "n_params.as_str", "cfg.n_layers", "cfg.d_model", "cfg.d_vocab"):
        assert col in df.columns
    assert list(df.model) == get_model_names() and "gpt2-small" in set(df.model)
    row = df.set_index("model").loc["gpt2-xl"]
    assert row.model_family == "gpt2" and row.model_size == 1.558 and row["n_params.as_str"] == "1.6B"
    assert row["cfg.n_layers"] == 48 and row["cfg.d_vocab"] == 50257
    assert df.set_index("model").loc["gpt2-small", "n_params.as_str"] == "124M"
    # every family name of the original matches models; meta = the meta-llama models
    for fam in model_manager.MODEL_FAMILIES:
        assert len(get_model_list(model_families=[fam], max_size=100)), fam
    meta = get_model_list(model_families=["meta"], max_size=100)
    assert set(meta.model) == {m for m in model_manager.read_model_table().alias if m.startswith("llama-3")}
    # the paper's four clustering families
    paper = ["gpt2-small", "gpt2-xl", "llama-3.2-1b-instruct", "llama-3-8b-instruct", "gemma-2-2b-it", "qwen3-8b"]
    fams = get_model_list(max_size=100).set_index("model").loc[paper, "paper_family"]
    assert list(fams) == ["gpt2", "gpt2", "llama", "llama", "gemma", "qwen"]


def test_model_table_update_offline_keeps_file(no_network):
    before = model_manager.MODEL_TABLE.read_bytes()
    with pytest.raises(ModelTableUpdateError, match="kept the shipped"):
        get_model_list(update=True)
    assert model_manager.MODEL_TABLE.read_bytes() == before


def test_dtype_and_device_choice():
    assert pick_dtype("auto", torch.device("cpu")) == torch.float32
    assert pick_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        pick_dtype("int3", torch.device("cpu"))
    assert model_manager.pick_device("auto").type in ("cpu", "cuda", "mps")


@pytest.mark.slow
def test_embedded_smollm2_profiles_offline(no_network, smollm2):
    """The real SmolLM2-135M from its pip package: exact lens, profiles, and greedy == generate."""
    mi = smollm2
    assert mi.n_layers == 30 and mi.d_vocab == 49152
    assert mi.lens.check_deviation <= 1e-4
    prof = mi.profile(["The capital of France is"], max_len=4, metrics=["shannon", "renyi:inf"])
    assert prof.entropy.shape == (1, 4, 30)
    assert np.isfinite(prof.entropy).all() and (prof.entropy >= 0).all()
    assert (prof.entropy <= np.log(49152) + 1e-4).all() and (prof.renyi_inf <= prof.entropy + 1e-4).all()
    assert "Paris" in prof.texts[0]
    from model_inspector.generation import encode_prompts

    wrapped = mi.tokenizer.decode(encode_prompts(mi.tokenizer, ["hi"], chat_template=True)["input_ids"][0])
    assert "<|im_start|>user\nhi<|im_end|>" in wrapped and wrapped.rstrip().endswith("<|im_start|>assistant")
    chat = mi.profile(["hi"], max_len=2, chat_template=True)
    assert chat.entropy.shape == (1, 2, 30)
    # batch 1: the forward uses SDPA, and every layer's lens is one [L, d] x [d, V] product per step
    assert mi.model.config._attn_implementation == "sdpa"
    from torch.profiler import profile as torch_profile

    resid = torch.randn(1, 30, mi.d_model)
    with torch_profile() as prof_:
        mi.lens.metrics(resid, ["shannon"], budget_bytes=mi.budget_bytes, top_k=1)
    products = [e for e in prof_.events() if e.name in ("aten::mm", "aten::addmm", "aten::matmul", "aten::linear")
                and e.cpu_parent is None]
    assert len(products) == 1, [e.name for e in products]


@pytest.mark.slow
def test_gguf_file_loads_and_caches(no_network, tmp_path, monkeypatch):
    monkeypatch.setenv("ENTROPY_LENS_CACHE", str(tmp_path))
    gguf = model_manager.embedded_gguf_path("smollm2-135m-instruct")
    model, tok = load_model(str(gguf), device="cpu")
    converted = list((tmp_path / "converted").iterdir())
    assert len(converted) == 1 and (converted[0] / "model.safetensors").exists()
    assert model.config.num_hidden_layers == 30
    stamp = (converted[0] / "model.safetensors").stat().st_mtime_ns
    load_model(str(gguf), device="cpu")  # from the safetensors cache: not converted again
    assert (converted[0] / "model.safetensors").stat().st_mtime_ns == stamp
