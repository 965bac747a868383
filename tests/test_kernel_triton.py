"""The fused Triton map kernel equals the PyTorch path (SPEC §2 steps 3–4), and the dispatcher picks
and refuses backends as documented in docs/environment.md.

With CUDA the kernel runs compiled on the GPU, in this process. Without, it runs in Triton's CPU
interpreter in ONE subprocess (this file run as a script, with ``TRITON_INTERPRET=1``): the variable
must be set before triton is first imported, and setting it here would leak into every other test.
Either way the kernel's outputs and their random inputs come back to this process, which computes
the PyTorch reference and compares; the end-to-end cases bring back maps from both backends, made
on one device. Four launches are also compiled for sm_90 (no GPU needed) to catch what the
interpreter accepts and a GPU compiler would not.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_clip
from torch import Tensor

import gradeclip
from gradeclip.errors import BackendUnavailableError, InputError
from gradeclip.kernels import dispatch, maps_triton
from gradeclip.kernels.dispatch import compute_maps, select_backend
from gradeclip.kernels.maps_torch import maps_torch, spatial_weights
from gradeclip.kernels.maps_triton import KernelConfig, default_config

ON_GPU = torch.cuda.is_available()
HAS_OPEN_CLIP = importlib.util.find_spec("open_clip") is not None  # the GPU machine may lack it
PACKAGE_ROOT = Path(gradeclip.__file__).parents[1]
needs_triton = pytest.mark.skipif(maps_triton.triton_import_error() is not None, reason="triton is not installed")

# Both paths compute in fp32 from the same input values; the kernel's tl.dot uses tf32x3 for fp32
# inputs (PyTorch's default "highest" matmul precision) and tf32 for 16-bit inputs, whose rounding
# (2^-11) is no coarser than the inputs' own. Tolerances are relative to the largest map value.
TOL = {torch.float32: 1e-4, torch.float16: 3e-3, torch.bfloat16: 3e-3}
TF32_TOL = 3e-3


def make_inputs(batch, n, d, t, heads, dtype, device, *, mask=False, strided=False):
    """Fresh random ``q, k, v, g, probs, key_mask`` with realistic scales (gradients ~1e-3).

    ``strided``: k and v are views into packed ``[B, 1+N, 3D]`` qkv rows (neither contiguous)."""
    if strided:
        qkv = torch.randn(batch, 1 + n, 3 * d, device=device).to(dtype)
        q, k, v = qkv[:, 0, :d], qkv[:, 1:, d : 2 * d], qkv[:, 1:, 2 * d :]
    else:
        q = torch.randn(batch, d, device=device).to(dtype)
        k = (0.5 * q.float().unsqueeze(1) + torch.randn(batch, n, d, device=device)).to(dtype)  # cosines spread out
        v = torch.randn(batch, n, d, device=device).to(dtype)
    g = 1e-3 * torch.randn(batch, t, d, device=device)
    probs = (3 * torch.randn(batch, heads, n, device=device)).softmax(-1)
    key_mask = None
    if mask:
        key_mask = torch.rand(batch, n, device=device) > 0.3
        key_mask[:, 0] = True
        key_mask[-1] = False  # a row with no valid key: all zeros
    return q, k, v, g, probs, key_mask


def reference(q, k, v, g, probs, key_mask, spatial, heads):
    return maps_torch(v, g, spatial_weights(q, k, spatial, heads, probs, key_mask))


def assert_maps_close(out, ref, tol):
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert (out >= 0).all()
    scale = ref.abs().max().clamp_min(1e-30).item()
    torch.testing.assert_close(out, ref, atol=tol * scale, rtol=tol)


# (N, D, T, heads, spatial, dtype, options): a covering subset of N ∈ {49, 196, 197, 577},
# D ∈ {64, 768, 1024}, T ∈ {1, 3, 130}, heads ∈ {1, 4, 12, 16}, every spatial option and dtype,
# both kernel branches (T = 1: GEMV, else GEMM) and both key layouts (one tile, several tiles).
CASES = {
    "n49-d64-t1-h1-loosened-f32": (49, 64, 1, 1, "loosened", torch.float32, {}),
    "n49-d1024-t130-h16-softmax-bf16": (49, 1024, 130, 16, "softmax", torch.bfloat16, {}),
    "n196-d768-t1-h12-loosened-bf16": (196, 768, 1, 12, "loosened", torch.bfloat16, {}),
    "n196-d768-t3-h1-loosened-f16-strided": (196, 768, 3, 1, "loosened", torch.float16, {"strided": True}),
    "n196-d768-t16-h1-loosened-f32-tf32": (196, 768, 16, 1, "loosened", torch.float32, {"precision": "high"}),
    "n197-d768-t1-h12-softmax-f16": (197, 768, 1, 12, "softmax", torch.float16, {}),
    "n197-d64-t130-h4-loosened-f32": (197, 64, 130, 4, "loosened", torch.float32, {}),
    "n197-d64-t3-h4-loosened-bf16-mask": (197, 64, 3, 4, "loosened", torch.bfloat16, {"mask": True}),
    "n577-d64-t1-h4-loosened-f16-tiled": (577, 64, 1, 4, "loosened", torch.float16, {"config": KernelConfig(1, 256, 16, 8, 2)}),
    "n577-d64-t3-h1-none-f32": (577, 64, 3, 1, "none", torch.float32, {}),
    "n197-d64-t20-h4-loosened-f32-mask-tiled": (
        197, 64, 20, 4, "loosened", torch.float32, {"mask": True, "config": KernelConfig(16, 64, 16, 4, 2)}),
    "n49-d64-t3-h4-softmax-f32-gemv-per-text": (
        49, 64, 3, 4, "softmax", torch.float32, {"mask": True, "config": KernelConfig(1, 64, 16, 4, 2)}),
}
EXPLAINER_CASES = {
    "single-loosened": dict(heads="single", spatial="loosened"),
    "model-softmax-out_proj": dict(heads="model", spatial="softmax", qk_space="out_proj"),
    "model-none-2layers": dict(heads="model", spatial="none", n_layers=2),
}


@contextmanager
def matmul_precision(value: str):
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(value)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def run_kernel_case(index: int, name: str, device: str) -> dict[str, Tensor]:
    """Fresh inputs for case ``name`` and the kernel's maps, all moved to the CPU."""
    n, d, t, heads, spatial, dtype, options = CASES[name]
    config = options.get("config")
    torch.manual_seed(100 + index)
    batch = 1 if config is not None or n * d * max(t, 16) > 2_000_000 else 2  # keeps the interpreter quick
    q, k, v, g, probs, key_mask = make_inputs(
        batch, n, d, t, heads, dtype, device, mask=options.get("mask", False), strided=options.get("strided", False))
    with matmul_precision(options.get("precision", "highest")):
        out = maps_triton.maps_triton(q, k, v, g, spatial=spatial, heads=heads, probs=probs, key_mask=key_mask, config=config)
    tensors = dict(q=q, k=k, v=v, g=g, probs=probs, out=out) | ({} if key_mask is None else {"key_mask": key_mask})
    return {key: value.cpu() for key, value in tensors.items()}


def run_explainer_case(index: int, name: str, device: str) -> dict[str, Tensor]:
    """Maps and scores of a fresh tiny model with each backend, on one device (so that only the
    backend differs: on a GPU, PyTorch's own convolutions may run in TF32)."""
    torch.manual_seed(200 + index)
    model = tiny_clip().to(device)
    images = torch.randn(3, 3, 32, 32, device=device)
    texts = F.normalize(torch.randn(4, 32, device=device), dim=-1)
    results = {}
    for backend in ("triton", "torch"):
        with pytest.MonkeyPatch.context() as env:  # also outside pytest: the interpreter worker runs this
            env.setenv("GRADECLIP_BACKEND", backend)
            assert select_backend(images.device) == backend
            res = gradeclip.Explainer(model).explain_image(images, texts, **EXPLAINER_CASES[name])
        results |= {f"{backend}_maps": res.maps.cpu(), f"{backend}_scores": res.scores.cpu()}
    return results


def run_all(device: str) -> dict[str, dict[str, dict[str, Tensor]]]:
    """Every kernel case and, where open_clip is installed, every explainer case."""
    results = {"kernel": {name: run_kernel_case(i, name, device) for i, name in enumerate(CASES)}, "explainer": {}}
    if HAS_OPEN_CLIP:
        results["explainer"] = {name: run_explainer_case(i, name, device) for i, name in enumerate(EXPLAINER_CASES)}
    return results


@pytest.fixture(scope="session")
def triton_results(tmp_path_factory) -> dict[str, dict[str, dict[str, Tensor]]]:
    """Every case's kernel outputs: on the GPU here, else from one interpreter subprocess."""
    if ON_GPU:
        return run_all("cuda")
    path = tmp_path_factory.mktemp("triton") / "results.pt"
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join([str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, __file__, str(path)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, f"interpreter run failed:\n{done.stdout[-4000:]}\n{done.stderr[-8000:]}"
    return torch.load(path)


@needs_triton
@pytest.mark.parametrize("case", list(CASES))
def test_kernel_matches_torch_path(triton_results, case):
    n, d, t, heads, spatial, dtype, options = CASES[case]
    config = options.get("config")
    if config is not None:
        assert config.block_n < n or config.block_t == 1 < t, "the case must exercise what its config forces"
    r = triton_results["kernel"][case]
    key_mask = r.get("key_mask")
    assert r["k"].dtype == dtype
    ref = reference(r["q"], r["k"], r["v"], r["g"], r["probs"], key_mask, spatial, heads)
    assert_maps_close(r["out"], ref, TF32_TOL if options.get("precision") == "high" else TOL[dtype])
    if key_mask is not None:
        assert (r["out"][~key_mask.unsqueeze(1).expand_as(r["out"])] == 0).all()


@needs_triton
@pytest.mark.parametrize("case", list(EXPLAINER_CASES))
def test_explainer_gives_the_same_maps_with_either_backend(triton_results, case):
    r = triton_results["explainer"][case]
    assert r["triton_maps"].shape == (3, 4, 4, 4)
    assert r["triton_maps"].abs().sum() > 0
    assert_maps_close(r["triton_maps"], r["torch_maps"], TOL[torch.float32])
    torch.testing.assert_close(r["triton_scores"], r["torch_scores"], atol=1e-6, rtol=1e-6)


def test_default_config_covers_both_layouts():
    """The default launch parameters reach both key layouts and both branches on these shapes."""
    assert default_config(196, 1, 64, 12).block_n >= 196  # ViT-B/16: one tile, k and v read once
    assert default_config(196, 1, 64, 12).block_t == 1
    assert default_config(577, 1, 4, 16).block_n < 577  # several tiles: k read twice
    assert default_config(577, 3, 1024, 1).block_n >= 577
    assert default_config(196, 1000, 64, 12).block_t >= 16


# What the compiler must produce at the shapes that matter (PTX text), beyond compiling at all.
HOPPER_CASES = {
    "vit-b16-bf16-t1-h12-gemv": ((196, 768, 1, 12, "loosened", torch.bfloat16, {}), ["cp.async.cg.shared.global"]),
    "vit-b16-fp32-t1000-h12-gemm": ((196, 768, 1000, 12, "loosened", torch.float32, {}), ["wgmma.mma_async"]),
    "f16-softmax-mask-tiled": ((197, 64, 20, 4, "softmax", torch.float16, {"mask": True, "config": KernelConfig(16, 64, 16, 4, 2)}), []),
    "bf16-n577-t1-h16-tiled": ((577, 1024, 1, 16, "loosened", torch.bfloat16, {}), []),
}
@needs_triton
@pytest.mark.slow
@pytest.mark.parametrize("case", list(HOPPER_CASES))
def test_kernel_compiles_for_hopper(case):
    """The interpreter accepts what a GPU compiler may reject: compile for sm_90 (the H100/H200) here,
    no GPU needed, and check the instructions the design relies on (pipelined 16-byte copies for
    the GEMV branch, wgmma for large T)."""
    import triton

    if maps_triton.interpreting() or "nvidia" not in triton.backends.backends:
        pytest.skip("needs triton's NVIDIA backend, compiled mode")
    (n, d, t, heads, spatial, dtype, options), expected = HOPPER_CASES[case]
    q, k, v, g, probs, key_mask = make_inputs(2, n, d, t, heads, dtype, "cpu", mask=options.get("mask", False))
    out = torch.empty(2, t, n)
    [launch] = maps_triton.plan_launches(
        q, k, v, g, out, spatial=spatial, heads=heads, probs=probs, key_mask=key_mask, config=options.get("config"))
    ptx = maps_triton.compile_ahead(launch, capability=90).asm["ptx"]
    for instruction in expected:
        assert instruction in ptx


def test_forced_triton_on_cpu_tensors_raises(monkeypatch):
    monkeypatch.setenv("GRADECLIP_BACKEND", "triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    q, k, v, g, probs, _ = make_inputs(1, 16, 64, 2, 4, torch.float32, "cpu")
    with pytest.raises(BackendUnavailableError, match="GRADECLIP_BACKEND=triton, but the tensors are on 'cpu'"):
        compute_maps(q, k, v, g, spatial="loosened", heads=4)


def test_forced_triton_on_cpu_raises_from_the_explainer(monkeypatch):
    monkeypatch.setenv("GRADECLIP_BACKEND", "triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(BackendUnavailableError):
        gradeclip.Explainer(tiny_clip()).explain_image(torch.randn(1, 3, 32, 32), F.normalize(torch.randn(2, 32), dim=-1))


def test_forced_triton_without_triton_raises(monkeypatch):
    monkeypatch.setenv("GRADECLIP_BACKEND", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(maps_triton, "triton_import_error", lambda: "No module named 'triton'")
    with pytest.raises(BackendUnavailableError, match="triton cannot be imported"):
        select_backend(torch.device("cpu"))
    monkeypatch.setenv("GRADECLIP_BACKEND", "auto")
    assert select_backend(torch.device("cuda")) == "torch"


def test_auto_and_torch_choices_are_logged(monkeypatch, caplog):
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # the interpreter is only used when triton is forced
    dispatch._log_choice.cache_clear()
    with caplog.at_level(logging.DEBUG, logger="gradeclip.kernels.dispatch"):
        for value, expected in (("", "torch"), ("AUTO", "torch"), ("torch", "torch")):
            monkeypatch.setenv("GRADECLIP_BACKEND", value)
            assert select_backend(torch.device("cpu")) == expected
    assert "torch backend (auto: the tensors are on 'cpu', not CUDA)" in caplog.text
    assert "torch backend (GRADECLIP_BACKEND=torch)" in caplog.text


def test_unknown_backend_is_an_input_error(monkeypatch):
    monkeypatch.setenv("GRADECLIP_BACKEND", "cuda")
    with pytest.raises(InputError, match="GRADECLIP_BACKEND='cuda' is not one of auto, triton, torch"):
        select_backend(torch.device("cpu"))


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(heads=5), "heads must be a positive integer dividing D"),
        (dict(q=torch.zeros(2, 64, dtype=torch.float16)), "share one dtype"),
        (dict(g=torch.zeros(2, 3, 32)), "g must be"),
        (dict(spatial="softmax"), "needs probs"),
        (dict(spatial="gaussian"), "spatial='gaussian'"),
        (dict(key_mask=torch.ones(2, 16)), "key_mask must be bool"),
        (dict(config=KernelConfig(8, 64, 16, 4, 2)), "block_t must be 1 or a power of two >= 16"),
        (dict(config=KernelConfig(16, 48, 16, 4, 2)), "block_n must be a power of two >= 16"),
    ],
    ids=["heads", "dtype", "g-shape", "probs", "spatial", "mask-dtype", "block_t", "block_n"],
)
def test_bad_inputs_are_named(change, message):
    """Checked before anything is launched, so this runs (and raises) on any machine."""
    q, k, v, g, _, _ = make_inputs(2, 16, 64, 3, 4, torch.float32, "cpu")
    args = dict(q=q, k=k, v=v, g=g, spatial="loosened", heads=4, probs=None, key_mask=None, config=None) | change
    with pytest.raises(InputError, match=message):
        maps_triton.maps_triton(**args)


def test_package_imports_and_maps_without_triton():
    """With triton unimportable the package still imports and the PyTorch path runs (subprocess:
    hiding a module cannot be undone in-process)."""
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch\n"
        "from gradeclip.kernels import compute_maps, maps_triton\n"
        "q, k, v, g = torch.randn(1, 8), torch.randn(1, 5, 8), torch.randn(1, 5, 8), torch.randn(1, 2, 8)\n"
        "assert compute_maps(q, k, v, g, spatial='loosened', heads=2).shape == (1, 2, 5)\n"
        "print(maps_triton.unavailable_reason(torch.device('cuda')))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT), GRADECLIP_BACKEND="auto")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("triton cannot be imported")


def test_docs_example_runs(capsys):
    """The example in docs/kernels.md runs as written (PyTorch path here, the kernel on a GPU)."""
    text = (PACKAGE_ROOT.parent / "docs" / "kernels.md").read_text()
    example = text.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(example, "docs/kernels.md", "exec"), {})
    expected = "triton" if ON_GPU else "torch"
    assert capsys.readouterr().out.strip() == f"{expected} torch.Size([4, 3, 196]) torch.float32"


if __name__ == "__main__":  # the interpreter worker started by triton_results
    assert maps_triton.interpreting(), "run with TRITON_INTERPRET=1"
    torch.save(run_all("cpu"), sys.argv[1])
