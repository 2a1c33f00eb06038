# One entry point. `make distill` runs the main job, `make test` the tests; each creates what it needs.
#
# The dependencies (PyTorch and the rest, ~5.5 GB) live in a virtual environment in a cache keyed by the
# hash of pyproject.toml and the Python version, shared by every clone with the same dependencies (no
# re-download of PyTorch). `.venv` is this checkout's own light environment: a .pth file adds the cache's
# site-packages, and it holds an editable install of this checkout, so `.venv/bin/datadistill` and
# `import datadistill` there are this checkout's code, whichever clone made the cache.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/datadistill
DEPS_HASH := $(shell (cat pyproject.toml; $(PYTHON) -V) | sha256sum | cut -c1-12)
VENV_DIR := $(CACHE)/venv-$(DEPS_HASH)
VENV := .venv
# rebuilt when the cache it layers on, or the checkout's place, changes
VENV_KEY := $(shell echo '$(VENV_DIR) $(CURDIR)' | sha256sum | cut -c1-12)
PY := $(VENV)/bin/python
RUN := $(PY)
OUT ?= runs/quickstart

.PHONY: help venv data distill test bench bench-speed bench-table clean

help:
	@echo "make distill   main job: distill MNIST with DM (10 images/class, CPU preset), print accuracy, write the grid"
	@echo "make test      run the test suite"
	@echo "make data      prepare MNIST and Fashion-MNIST"
	@echo "make bench     run a benchmark suite (SUITE=cpu, ONLY=job ids): the jobs not yet recorded, then check"
	@echo "               every record against its expected accuracy (fails on a regression); writes docs/results.md"
	@echo "make bench-speed  DM and DC iterations against their FLOP floor, on this CPU's path and on AVX2"
	@echo "make bench-table  docs/results.md and docs/img/ from benchmarks/results/*.jsonl"

# keyed by content (the hash in the folder name), not by mtime: a fresh clone must not rebuild it.
# Dependencies only (setuptools for the checkouts' editable installs); the project goes into each .venv.
$(VENV_DIR)/.complete:
	rm -rf $(VENV_DIR)
	$(PYTHON) -m venv $(VENV_DIR)
	$(VENV_DIR)/bin/python -m pip install --quiet --upgrade pip 'setuptools>=68'
	$(VENV_DIR)/bin/python -m pip install --quiet -e '.[test,ray]'
	$(VENV_DIR)/bin/python -m pip uninstall --quiet --yes datadistill
	touch $@

# Built beside .venv, then swapped in (scripts and activate name .venv.tmp until the sed), so that .venv
# works throughout. The cache's console scripts (pip, pytest...) are copied to run with .venv's Python.
# A cache made by an older Makefile holds an editable install of some clone: it is uninstalled last.
$(VENV)/.key-$(VENV_KEY): $(VENV_DIR)/.complete
	rm -rf $(VENV).tmp $(VENV).old
	$(VENV_DIR)/bin/python -m venv --without-pip --prompt $(notdir $(CURDIR)) $(VENV).tmp
	deps=$$($(VENV_DIR)/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))') && \
	site=$$($(VENV).tmp/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))') && \
	echo "import site; site.addsitedir('$$deps')" > $$site/_datadistill_deps.pth
	PYTHONWARNINGS=ignore $(VENV).tmp/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@for f in $(VENV_DIR)/bin/*; do n=$${f##*/}; \
	  if [ ! -e $(VENV).tmp/bin/$$n ] && head -n 2 $$f | grep -qF '$(VENV_DIR)/bin/python'; then \
	    sed '1,2s|$(VENV_DIR)/bin/python[0-9.]*|$(abspath $(VENV)).tmp/bin/python|' $$f > $(VENV).tmp/bin/$$n; \
	    chmod +x $(VENV).tmp/bin/$$n; fi; done
	if [ -e $(VENV) ] || [ -L $(VENV) ]; then mv -T $(VENV) $(VENV).old; fi
	mv -T $(VENV).tmp $(VENV)
	grep -rlIF '$(abspath $(VENV)).tmp' $(VENV)/bin $(VENV)/pyvenv.cfg | xargs -r sed -i 's|$(abspath $(VENV)).tmp|$(abspath $(VENV))|g'
	rm -rf $(VENV).old
	if ls -d $(VENV_DIR)/lib/python*/site-packages/datadistill-*.dist-info >/dev/null 2>&1; then \
	  $(VENV_DIR)/bin/python -m pip uninstall --quiet --yes datadistill; fi
	echo '$(VENV_DIR) $(CURDIR)' > $@

venv: $(VENV)/.key-$(VENV_KEY)

data: venv
	$(RUN) -m datadistill.cli data prepare mnist
	$(RUN) -m datadistill.cli data prepare fashion_mnist

distill: venv
	$(RUN) -m datadistill.cli data prepare mnist
	$(RUN) -m datadistill.cli distill --preset dm-cpu --dataset mnist --ipc 10 --out $(OUT) $(if $(wildcard $(OUT)/config.yaml),--resume)
	@cat $(OUT)/report.md

test: venv
	DATADISTILL_VENV_CACHE=$(VENV_DIR) $(RUN) -m pytest tests
	@# the numeric tests once more on another CPU path (AVX2 on AVX-512 machines, plain kernels on AVX2 ones)
	env $$($(RUN) tests/alt_capability.py) $(RUN) -m pytest -q -m numeric tests

# benchmarks/suites/$(SUITE).yaml: resumable (a recorded job is skipped, a run folder resumes), exit 1 on a regression
SUITE ?= cpu
ONLY ?=
bench: venv data
	$(RUN) benchmarks/run.py $(SUITE) $(if $(ONLY),--only $(ONLY))
	$(RUN) benchmarks/report.py

AVX2 := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2

# each command appends its records to benchmarks/results/speed.jsonl as it finishes (about 15 min in all)
bench-speed: venv
	$(RUN) -m datadistill.cli data prepare mnist
	$(RUN) benchmarks/speed_dm.py --steps 3
	$(AVX2) $(RUN) benchmarks/speed_dm.py --steps 3
	$(RUN) benchmarks/speed_dc.py
	$(AVX2) $(RUN) benchmarks/speed_dc.py
	$(RUN) benchmarks/speed_eval.py
	$(AVX2) $(RUN) benchmarks/speed_eval.py
	$(RUN) benchmarks/report.py

bench-table: venv
	$(RUN) benchmarks/report.py

clean:
	rm -rf runs .pytest_cache
