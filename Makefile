# The README's two commands. Both set up .venv first (scripts/setup.sh is idempotent).
.PHONY: setup demo test

setup:
	./scripts/setup.sh

demo: setup
	.venv/bin/codestage demo --out runs/demo

test: setup
	.venv/bin/python -m pytest -q
