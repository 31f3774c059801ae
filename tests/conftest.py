"""Shared fixtures. Tests run offline: the HF hub is never contacted."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")
# threads that find their core busy spin: a loaded machine made a 6-token forward 60x slower with 2 torch threads
# (4 s against 0.07 s with 1); passive waiting and the project's own rule (idle cores only) keep tests steady
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]

import pytest  # noqa: E402  (pytest puts tests/ on sys.path itself: helpers and tiny_models import as modules)


def pytest_configure(config):
    """In-process tests use the cores that are idle now (as the command line does), at least one."""
    from model_inspector.threads import set_threads

    set_threads(None)

#: The shared offline data, beside the checkout (../shared/data), or $ENTROPY_LENS_DATA.
SHARED_DATA = Path(os.environ.get("ENTROPY_LENS_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert (SHARED_DATA / "mmlu_test.jsonl").exists(), f"shared data not found at {SHARED_DATA}"
    return SHARED_DATA


@pytest.fixture(scope="session")
def stories_file(tmp_path_factory) -> Path:
    """A TinyStories JSONL file of :data:`helpers.TWO_STORIES` (a module with other stories defines its own)."""
    import json

    from helpers import TWO_STORIES

    p = tmp_path_factory.mktemp("stories") / "stories.jsonl"
    p.write_text("".join(json.dumps({"text": s}) + "\n" for s in TWO_STORIES))
    return p


@pytest.fixture(scope="session")
def tok():
    from tiny_models import char_tokenizer

    return char_tokenizer()


@pytest.fixture(scope="session")
def smollm2():
    """The embedded SmolLM2-135M-Instruct as a ModelInspector (fp32, CPU)."""
    from model_inspector import ModelInspector

    return ModelInspector("smollm2-135m-instruct", device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A tiny random Llama saved with the char tokenizer, loadable by path like any local model."""
    from tiny_models import char_tokenizer, tiny_model

    d = tmp_path_factory.mktemp("models") / "tiny-llama"
    tiny_model("llama", max_position_embeddings=2048).save_pretrained(d)
    char_tokenizer().save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def mi(tiny_dir):
    """A ModelInspector of the tiny Llama in ``tiny_dir`` (one per test module; a module may define its own)."""
    from model_inspector import ModelInspector

    return ModelInspector(str(tiny_dir))


@pytest.fixture
def one_thread():
    """One torch thread: the tiny models gain nothing from more, and OpenMP threads spin on a busy machine
    (``pytestmark = pytest.mark.usefixtures("one_thread")`` in a module)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
