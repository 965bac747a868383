# The two set-up commands of the README: `make demo` and `make test`.
# Each installs what is missing (PyTorch pair, the package with its compiled extension and test
# dependencies), then runs the demo or every test (Rust and Python).
# `make test-numerics` re-runs the numerics-sensitive tests the way another machine would.
PYTHON ?= python3

# Test files whose numbers depend on float summation order (batch shapes, thread counts, CPU
# kernels): parity tests of the explainer, its towers and baselines, the evaluation harness and
# metrics, the explain command, rendering against torch, the shipped model's recorded figures.
NUMERICS_TESTS = \
	tests/test_baselines.py \
	tests/test_eval_families.py \
	tests/test_eval_harness.py \
	tests/test_eval_metrics.py \
	tests/test_eval_perturbation.py \
	tests/test_explain_command.py \
	tests/test_explainer_inputs.py \
	tests/test_gradcam_library.py \
	tests/test_kernel_triton.py \
	tests/test_render.py \
	tests/test_synth_model.py \
	tests/test_text_class_token_bidirectional.py \
	tests/test_text_parity.py \
	tests/test_text_towers.py \
	tests/test_towers_hf.py \
	tests/test_towers_openclip.py \
	tests/test_towers_timm.py \
	tests/test_visual_parity.py
# PyTorch's portable kernels (a stand-in for another CPU) and its AVX2 ones, with 1 and 2 threads
NUMERICS_CPU_KERNELS = default avx2
NUMERICS_THREADS = 1 2
# extra pytest arguments, e.g. NUMERICS_PYTEST_ARGS='-m "not slow"' for the quick part
NUMERICS_PYTEST_ARGS ?=

.PHONY: install demo test test-numerics

install:
	$(PYTHON) -m pip install -q -r requirements/torch.txt
	$(PYTHON) -m pip install -q -e ".[test]"

demo: install
	$(PYTHON) -m gradeclip demo

test: install
	cargo test -q
	$(PYTHON) -m pytest -q

test-numerics: install
	@set -e; for kernels in $(NUMERICS_CPU_KERNELS); do for threads in $(NUMERICS_THREADS); do \
		echo "== ATEN_CPU_CAPABILITY=$$kernels GRADECLIP_TEST_THREADS=$$threads"; \
		ATEN_CPU_CAPABILITY=$$kernels GRADECLIP_TEST_THREADS=$$threads \
			$(PYTHON) -m pytest -q -p no:cacheprovider $(NUMERICS_PYTEST_ARGS) $(NUMERICS_TESTS); \
	done; done
