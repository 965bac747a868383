"""Shared fixtures: small random-weight models (no downloads), a per-test seed, and the suite's
environment policy.

The policy is applied once, when pytest starts (before any test module is imported), through one
``pytest.MonkeyPatch`` that is undone when the session ends:

- torch threads: ``GRADECLIP_TEST_THREADS`` (a positive integer; default ``min(4, logical CPUs)``),
  for this process and, through ``OMP_NUM_THREADS``, for every child process a test starts;
  a test whose code changes the count (``gradeclip.synth.train`` sets its own) gets it put back;
- ``HF_HUB_OFFLINE=1``: no test reaches the network (huggingface_hub reads it when imported).

``make test-numerics`` runs the numerics-sensitive files with 1 and 2 threads under two
``ATEN_CPU_CAPABILITY`` values; the header pytest prints names both settings.
"""

from __future__ import annotations

import os

import pytest
import torch

THREADS_VARIABLE = "GRADECLIP_TEST_THREADS"


def _suite_threads() -> int:
    value = os.environ.get(THREADS_VARIABLE, "").strip()
    if not value:
        return max(1, min(4, os.cpu_count() or 1))
    if not value.isdigit() or int(value) < 1:
        raise pytest.UsageError(f"{THREADS_VARIABLE} must be a positive integer, got {value!r}")
    return int(value)


#: torch threads of every test (and OMP_NUM_THREADS of the processes tests start)
TORCH_THREADS = _suite_threads()
_policy = pytest.MonkeyPatch()


def pytest_configure(config: pytest.Config) -> None:
    _policy.setenv("HF_HUB_OFFLINE", "1")
    _policy.setenv("OMP_NUM_THREADS", str(TORCH_THREADS))
    torch.set_num_threads(TORCH_THREADS)


def pytest_unconfigure(config: pytest.Config) -> None:
    _policy.undo()


def pytest_report_header(config: pytest.Config) -> str:
    capability = torch.backends.cpu.get_cpu_capability()
    return f"torch threads: {TORCH_THREADS} ({THREADS_VARIABLE}); torch CPU kernels: {capability} (ATEN_CPU_CAPABILITY)"


@pytest.fixture(autouse=True)
def seed() -> int:
    """Every test starts from the same seed; tests that need several draws advance it themselves."""
    torch.manual_seed(0)
    return 0


@pytest.fixture(autouse=True)
def suite_threads() -> int:
    """Every test runs with the suite's torch thread count, whatever an earlier test's code set."""
    if torch.get_num_threads() != TORCH_THREADS:
        torch.set_num_threads(TORCH_THREADS)
    return TORCH_THREADS


def tiny_clip(**vision_overrides):
    """A small open_clip CLIP (random weights) with a ViT image tower: patch 8, 32 px, 3 blocks."""
    import open_clip

    vision = dict(image_size=32, patch_size=8, width=64, layers=3, head_width=16, mlp_ratio=2.0)
    vision.update(vision_overrides)
    text = dict(context_length=77, vocab_size=49408, width=64, heads=4, layers=3)
    model = open_clip.CLIP(embed_dim=32, vision_cfg=vision, text_cfg=text)
    with torch.no_grad():  # open_clip leaves some of these at zero or one; spread them so tests can fail
        for name, p in model.named_parameters():
            if "bias" in name or "ls_" in name or "ln" in name:
                p.add_(0.05 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="session")
def tiny_model():
    torch.manual_seed(1234)
    return tiny_clip()


@pytest.fixture(scope="session")
def tokenizer():
    import open_clip

    return open_clip.get_tokenizer("ViT-B-32")


@pytest.fixture(scope="session")
def vit_b32():
    import open_clip

    torch.manual_seed(1)
    return open_clip.create_model("ViT-B-32", pretrained=None).eval()


@pytest.fixture(scope="session")
def vit_b16():
    import open_clip

    torch.manual_seed(2)
    return open_clip.create_model("ViT-B-16", pretrained=None).eval()


def tiny_text_clip(custom: bool = False, **text_overrides):
    """A small open_clip model (random weights) whose text tower has 8 blocks, for text explanations.

    ``custom=False``: ``CLIP`` (text modules on the model); ``custom=True``: ``CustomTextCLIP``
    (a ``TextTransformer`` at ``.text``). Image tower as in :func:`tiny_clip`.
    """
    import open_clip

    vision = dict(image_size=32, patch_size=8, width=64, layers=3, head_width=16, mlp_ratio=2.0)
    text = dict(context_length=77, vocab_size=49408, width=64, heads=4, layers=8, mlp_ratio=2.0)
    text.update(text_overrides)
    cls = open_clip.CustomTextCLIP if custom else open_clip.CLIP
    model = cls(embed_dim=32, vision_cfg=vision, text_cfg=text)
    with torch.no_grad():  # spread biases, norms and layer scales so tests can fail
        for name, p in model.named_parameters():
            if "bias" in name or "ls_" in name or "ln" in name:
                p.add_(0.05 * torch.randn_like(p))
            if "token_embedding" in name or "positional_embedding" in name:
                p.mul_(50.0)  # at open_clip's init every token looks alike deep in the tower: make them differ
    return model.eval()
