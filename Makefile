# The README's commands. Each sets up .venv first (scripts/setup.sh is idempotent).
# pytest's own -q (pyproject addopts) keeps its count line ("N passed, ..."); a second -q would hide it.
.PHONY: setup demo test test-fast

setup:
	./scripts/setup.sh

demo: setup
	.venv/bin/codestage demo --out runs/demo

test: setup
	.venv/bin/python -m pytest

test-fast: setup
	.venv/bin/python -m pytest -m "not slow"
