# Two commands do all setup: `make demo` and `make test`. Each creates .venv if missing.
# torch is pinned to the CPU build that lies on this machine's disk; the package itself
# accepts torch>=2.2 so GPU users keep their own build.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint clean browser

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/gknet harmonize --composites examples/composites --masks examples/masks \
		-o outputs/demo --compare --overwrite
	@echo "demo outputs written to outputs/demo/"

# The studio's browser test drives Debian's Chromium; without it that one test skips.
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
		|| echo "chromium could not be installed: the browser test will be skipped"

test: $(STAMP) browser
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

clean:
	rm -rf outputs .pytest_cache
