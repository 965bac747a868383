# The two set-up commands of the README: `make demo` and `make test`.
# Each installs what is missing (PyTorch pair, the package with its compiled extension and test
# dependencies), then runs the demo or every test (Rust and Python).
PYTHON ?= python3

.PHONY: install demo test

install:
	$(PYTHON) -m pip install -q -r requirements/torch.txt
	$(PYTHON) -m pip install -q -e ".[test]"

demo: install
	$(PYTHON) -m gradeclip demo

test: install
	cargo test -q
	$(PYTHON) -m pytest -q
