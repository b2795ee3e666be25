# bowrt: two commands do all the set-up on a fresh machine.
#   make test   create .venv, install bowrt with its extras, run the tests
#   make demo   export the real-weights model and the bert-base twin, print parity and a speed summary
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Extras the tests and the demo need; re-installed only when pyproject.toml changes.
EXTRAS := export,test,serve,scale,bench
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: test test-fast demo bench clean install

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	# torch first, pinned: its CPU build lies on this machine's disk; an unpinned
	# torch (pulled in by transformers) would fetch a multi-GB CUDA build instead.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	rm -f $(VENV)/.installed-*
	touch $@

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# Everything but the bert-base sized tests (about a minute).
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m benchmarks.harness.demo

bench: $(STAMP)
	$(PY) -m benchmarks -o results/full

clean:
	rm -rf bundles results .pytest_cache
