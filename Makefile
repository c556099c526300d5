# The two commands README gives. Both set everything up first (idempotent).
.PHONY: setup serve test
setup:
	@bash scripts/setup.sh
serve: setup
	.venv/bin/llmodal serve
test: setup
	.venv/bin/python -m pytest -q
