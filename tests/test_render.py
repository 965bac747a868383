"""gradeclip.render against straightforward references: torch's interpolate, OpenCV's and
matplotlib's colour tables, numpy formulas from SPEC §5/§9, and Pillow's PNG decoder."""

from __future__ import annotations

import io
import os
import signal
import warnings

import cv2
import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from gradeclip import render
from gradeclip.errors import InputError, InputTypeError


@pytest.fixture
def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def torch_upsample(maps: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """The reference: PyTorch's interpolate with half-pixel centres."""
    t = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))[:, None]
    return F.interpolate(t, size=size, mode=mode, align_corners=False)[:, 0].numpy()


def minmax(m: np.ndarray) -> np.ndarray:
    """SPEC §5 per-map min-max normalisation, in float32; a constant map becomes zeros."""
    m = m.astype(np.float32)
    lo, hi = m.min(), m.max()
    return np.zeros_like(m) if hi == lo else (m - lo) / (hi - lo)


def opencv_jet() -> np.ndarray:
    """OpenCV's COLORMAP_JET as a [256, 3] RGB table."""
    return cv2.applyColorMap(np.arange(256, dtype=np.uint8)[None], cv2.COLORMAP_JET)[0, :, ::-1]


def table_index(m: np.ndarray) -> np.ndarray:
    """The documented value -> table entry rule: floor(255 * clip(v, 0, 1) + 0.5)."""
    return np.floor(np.clip(m, 0, 1).astype(np.float32) * np.float32(255) + np.float32(0.5)).astype(np.intp)


def blend(image: np.ndarray, colour: np.ndarray, alpha: float) -> np.ndarray:
    """SPEC §9: (1 - alpha) * image + alpha * colour, rounded half up, in float32."""
    a = np.float32(alpha)
    out = (np.float32(1) - a) * image.astype(np.float32) + a * colour.astype(np.float32) + np.float32(0.5)
    return np.floor(out).astype(np.uint8)


UPSAMPLE_CASES = [
    ((7, 7), (225, 301)),
    ((14, 14), (224, 224)),
    ((1, 1), (9, 5)),
    ((3, 8), (31, 9)),  # non-square, one axis shrinks
    ((9, 4), (4, 13)),
    ((16, 12), (16, 12)),  # identity
]
TOLERANCE = {"bilinear": 1e-5, "bicubic": 1e-4}


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize(("grid", "size"), UPSAMPLE_CASES, ids=lambda v: "x".join(map(str, v)))
def test_upsample_matches_torch(rng, grid, size, mode):
    maps = rng.standard_normal((3, *grid)).astype(np.float32) * 2
    got = render.upsample(maps, size, mode)
    assert got.dtype == np.float32 and got.shape == (3, *size)
    np.testing.assert_allclose(got, torch_upsample(maps, size, mode), rtol=0, atol=TOLERANCE[mode])


def test_upsample_per_map_sizes_and_list_inputs(rng):
    maps = [rng.standard_normal(g).astype(np.float32) for g in [(7, 7), (2, 5), (14, 14)]]
    sizes = [(225, 301), (13, 3), (224, 224)]
    got = render.upsample(maps, sizes, "bicubic")
    assert isinstance(got, list) and [g.shape for g in got] == sizes
    for m, s, g in zip(maps, sizes, got):
        np.testing.assert_allclose(g, torch_upsample(m[None], s, "bicubic")[0], atol=1e-4, rtol=0)
    # One array with one size per map gives a list too.
    stacked = rng.standard_normal((2, 4, 4)).astype(np.float32)
    per_map = render.upsample(stacked, np.array([[5, 6], [7, 8]]))
    assert [p.shape for p in per_map] == [(5, 6), (7, 8)]


def test_upsample_accepts_torch_and_other_float_dtypes(rng):
    maps = rng.standard_normal((2, 5, 6))
    want = torch_upsample(maps.astype(np.float32), (11, 13), "bilinear")
    for given_maps in [maps, torch.from_numpy(maps)]:
        np.testing.assert_allclose(render.upsample(given_maps, (11, 13)), want, atol=1e-5, rtol=0)
    bf16 = torch.from_numpy(maps).to(torch.bfloat16)
    want_bf16 = torch_upsample(bf16.float().numpy(), (11, 13), "bilinear")
    np.testing.assert_allclose(render.upsample(bf16, (11, 13)), want_bf16, atol=1e-5, rtol=0)
    transposed = np.ascontiguousarray(maps.transpose(0, 2, 1)).transpose(0, 2, 1)  # not C-contiguous
    np.testing.assert_allclose(render.upsample(transposed, (11, 13)), want, atol=1e-5, rtol=0)


def test_normalize_matches_formula(rng):
    maps = rng.standard_normal((4, 13, 17)).astype(np.float32) * 5 + 3
    maps[2] = 0.7  # constant
    got = render.normalize(maps)
    want = np.stack([minmax(m) for m in maps])
    np.testing.assert_array_equal(got, want)
    assert np.all(got[2] == 0)
    listed = render.normalize([maps[0], maps[1, :5, :3]])
    np.testing.assert_array_equal(listed[1], minmax(maps[1, :5, :3]))


def test_jet_is_opencv_byte_for_byte():
    ramp = (np.arange(256, dtype=np.float32) / 255)[None]
    np.testing.assert_array_equal(render.colorize(ramp[None])[0, 0], opencv_jet())


def test_colorize_random_maps_like_opencv(rng):
    maps = rng.random((3, 21, 34), dtype=np.float32)
    want = cv2.applyColorMap(table_index(maps).astype(np.uint8).reshape(-1, 34), cv2.COLORMAP_JET)
    np.testing.assert_array_equal(render.colorize(maps).reshape(-1, 34, 3), want[..., ::-1])


@pytest.mark.parametrize("name", ["viridis", "turbo"])
def test_matplotlib_tables_within_one_level(name):
    ramp = (np.arange(256, dtype=np.float32) / 255)[None, None]
    ours = render.colorize(ramp, name)[0, 0].astype(int)
    reference = matplotlib.colormaps[name](np.arange(256))[:, :3] * 255
    assert np.abs(ours - reference).max() <= 1.0


def test_colorize_clamps_out_of_range_values():
    maps = np.array([[[-2.0, 0.0, 1.0, 5.0]]], dtype=np.float32)
    got = render.colorize(maps, "turbo")[0, 0]
    np.testing.assert_array_equal(got[0], got[1])
    np.testing.assert_array_equal(got[2], got[3])


def photos(n: int, shapes: list[tuple[int, int]]) -> list[np.ndarray]:
    """Real photos (scikit-image), resized to the given shapes."""
    from skimage import data

    sources = [data.astronaut(), data.chelsea(), data.coffee()]
    return [
        np.asarray(Image.fromarray(sources[i % 3]).resize((w, h), Image.BILINEAR)) for i, (h, w) in enumerate(shapes[:n])
    ]


@pytest.mark.parametrize("alpha", [0.5, 0.3, 1.0])
@pytest.mark.parametrize("colormap", ["jet", "viridis"])
def test_overlay_is_spec_formula(rng, alpha, colormap):
    shapes = [(224, 224), (97, 143), (60, 31)]
    images = photos(3, shapes)
    maps = [rng.standard_normal(g).astype(np.float32) for g in [(14, 14), (7, 7), (3, 5)]]
    got = render.overlay(images, maps, alpha=alpha, colormap=colormap)
    table = opencv_jet() if colormap == "jet" else render.colorize((np.arange(256, dtype=np.float32) / 255)[None, None], colormap)[0, 0]
    for image, m, out in zip(images, maps, got):
        heat = minmax(render.upsample(m[None], image.shape[:2])[0])
        np.testing.assert_array_equal(out, blend(image, table[table_index(heat)], alpha))
        # The upsampling inside is torch's: compare through it too, allowing neighbouring entries.
        heat_torch = minmax(torch_upsample(m[None], image.shape[:2], "bilinear")[0])
        assert np.abs(table_index(heat_torch) - table_index(heat)).max() <= 1


def test_overlay_batch_array_in_array_out(rng):
    images = np.stack(photos(2, [(40, 50), (40, 50)]))
    maps = torch.randn(2, 4, 5)
    out = render.overlay(images, maps)
    assert isinstance(out, np.ndarray) and out.shape == images.shape and out.dtype == np.uint8


@pytest.mark.parametrize("compression", ["fastest", "fast", "balanced", "high"])
def test_png_round_trip_is_exact(rng, compression):
    images = photos(2, [(64, 80), (33, 17)])
    overlays = render.overlay(images, [rng.standard_normal((4, 4)).astype(np.float32)] * 2)
    for data, want in zip(render.encode_png(overlays, compression=compression), overlays):
        decoded = Image.open(io.BytesIO(data))
        assert decoded.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(decoded), want)


def test_save_overlays_writes_atomically(tmp_path, rng):
    images = photos(3, [(50, 60), (20, 30), (64, 64)])
    maps = [rng.standard_normal((7, 7)).astype(np.float32) for _ in images]
    paths = [tmp_path / f"{i}.png" for i in range(3)]
    paths[0].write_bytes(b"stale")  # replaced, not appended to
    render.save_overlays(paths, images, maps, alpha=0.4, colormap="turbo")
    want = render.overlay(images, maps, alpha=0.4, colormap="turbo")
    for path, w in zip(paths, want):
        np.testing.assert_array_equal(np.asarray(Image.open(path)), w)
    assert sorted(os.listdir(tmp_path)) == ["0.png", "1.png", "2.png"]  # no temporaries left

    bad = [tmp_path / "a.png", tmp_path / "missing" / "b.png", tmp_path / "c.png"]
    with pytest.raises(OSError, match=r"paths\[1\]"):
        render.save_overlays(bad, images, maps)
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path))


def test_single_path_is_rejected(tmp_path, rng):
    with pytest.raises(InputTypeError, match="sequence of paths"):
        render.save_overlays(str(tmp_path / "x.png"), photos(1, [(8, 8)]), rng.random((1, 2, 2)))


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        pytest.param(lambda: render.upsample(np.zeros((2, 3, 3), np.int64), (5, 5)), InputTypeError, "maps must be floating", id="int-maps"),
        pytest.param(lambda: render.upsample([np.zeros((3, 3)), np.zeros((3, 3), bool)], (5, 5)), InputTypeError, r"maps\[1\]", id="bool-map-in-list"),
        pytest.param(lambda: render.upsample(np.zeros((3, 3), np.float32), (5, 5)), InputError, "3 dimensions", id="2d-batch"),
        pytest.param(lambda: render.upsample([np.zeros((3, 3, 1))], (5, 5)), InputError, r"maps\[0\] must have 2", id="3d-map-in-list"),
        pytest.param(lambda: render.upsample(np.zeros((2, 0, 3), np.float32), (5, 5)), InputError, "empty", id="empty-map"),
        pytest.param(lambda: render.upsample(np.zeros((2, 3, 3), np.float32), (0, 5)), InputError, "positive", id="zero-size"),
        pytest.param(lambda: render.upsample(np.zeros((2, 3, 3), np.float32), [(4, 4)] * 3), InputError, "3 sizes for 2 maps", id="sizes-count"),
        pytest.param(lambda: render.upsample(np.zeros((2, 3, 3), np.float32), [(4, 4), (4, "a")]), InputError, r"size\[1\]", id="bad-pair"),
        pytest.param(lambda: render.upsample(np.zeros((1, 3, 3), np.float32), (4, 4), "nearest"), InputError, "bilinear", id="unknown-mode"),
        pytest.param(lambda: render.colorize(np.zeros((1, 3, 3), np.float32), "hot"), InputError, "viridis", id="unknown-colormap"),
        pytest.param(lambda: render.encode_png(np.zeros((1, 3, 3, 3), np.uint8), "max"), InputError, "balanced", id="unknown-compression"),
        pytest.param(lambda: render.overlay(np.zeros((2, 8, 8, 3), np.float32), np.zeros((2, 3, 3))), InputTypeError, r"images must be uint8", id="float-images"),
        pytest.param(lambda: render.overlay([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 4), np.uint8)], np.zeros((2, 3, 3))), InputError, r"images\[1\]", id="rgba-image"),
        pytest.param(lambda: render.overlay([np.zeros((0, 8, 3), np.uint8)], np.zeros((1, 3, 3))), InputError, r"images\[0\].*empty", id="empty-image"),
        pytest.param(lambda: render.overlay(np.zeros((3, 8, 8, 3), np.uint8), np.zeros((2, 3, 3))), InputError, "3 images for 2 maps", id="images-count"),
        pytest.param(lambda: render.overlay(np.zeros((1, 8, 8, 3), np.uint8), np.zeros((1, 3, 3)), alpha=1.5), InputError, "alpha", id="alpha-range"),
        pytest.param(lambda: render.encode_png(["not an array"]), InputTypeError, r"images\[0\]", id="not-an-array"),
    ],
)
def test_bad_input_is_named(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize(
    "call",
    [
        lambda m: render.upsample(m, (9, 9)),
        lambda m: render.normalize(m),
        lambda m: render.colorize(m),
        lambda m: render.overlay(np.zeros((3, 9, 9, 3), np.uint8), m),
        lambda m: render.save_overlays(["/nonexistent/a.png"] * 3, np.zeros((3, 9, 9, 3), np.uint8), m),
    ],
    ids=["upsample", "normalize", "colorize", "overlay", "save_overlays"],
)
def test_non_finite_maps_are_rejected_by_index(call, bad):
    maps = np.zeros((3, 4, 4), np.float32)
    maps[2, 1, 3] = bad
    with pytest.raises(InputError, match=r"maps\[2\] contains NaN or infinity"):
        call(maps)


# Properties.

finite = st.floats(-1e6, 1e6, allow_nan=False, width=32)
grids = st.tuples(st.integers(1, 9), st.integers(1, 9))
sizes = st.tuples(st.integers(1, 40), st.integers(1, 40))


@settings(max_examples=60, deadline=None)
@given(value=finite, grid=grids, size=sizes, mode=st.sampled_from(["bilinear", "bicubic"]))
def test_constant_map_stays_constant(value, grid, size, mode):
    up = render.upsample(np.full((1, *grid), value, np.float32), size, mode)
    assert np.all(up == np.float32(value))
    assert np.all(render.normalize(up) == 0)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), grid=grids, size=sizes)
def test_bilinear_stays_in_range_and_normalize_spans_unit(data, grid, size):
    m = data.draw(arrays(np.float32, (1, *grid), elements=finite))
    up = render.upsample(m, size)
    span = float(m.max()) - float(m.min())
    slack = 1e-6 * max(abs(float(m.max())), abs(float(m.min())), 1.0)
    assert up.min() >= m.min() - slack and up.max() <= m.max() + slack
    n = render.normalize(m)
    assert n.min() >= 0 and n.max() <= 1
    if span > 0:
        assert n.min() == 0 and n.max() == 1


@settings(max_examples=40, deadline=None)
@given(data=st.data(), shape=st.tuples(st.integers(1, 24), st.integers(1, 24)), grid=grids)
def test_overlay_alpha_ends_and_png_round_trip(data, shape, grid):
    image = data.draw(arrays(np.uint8, (*shape, 3)))
    m = data.draw(arrays(np.float32, grid, elements=finite))
    np.testing.assert_array_equal(render.overlay([image], [m], alpha=0.0)[0], image)
    full = render.overlay([image], [m], alpha=1.0, colormap="viridis")[0]
    colours = render.colorize([render.normalize([render.upsample([m], [shape])[0]])[0]], "viridis")[0]
    np.testing.assert_array_equal(full, colours)
    decoded = np.asarray(Image.open(io.BytesIO(render.encode_png([full])[0])))
    np.testing.assert_array_equal(decoded, full)


# Threads.


def in_forked_child(task) -> str:
    """Run ``task() -> str`` in a forked child process and return what it returned (or the error)."""
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork of a multi-threaded process
        pid = os.fork()
    if pid == 0:
        signal.alarm(60)  # a deadlocked pool kills the child instead of hanging the suite
        try:
            answer = task()
        except BaseException as e:  # report anything to the parent, never run the parent's code
            answer = f"{type(e).__name__}: {e}"
        os.write(write_fd, answer.encode())
        os._exit(0)
    os.close(write_fd)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read_fd, "rb") as f:
        answer = f.read().decode()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"child ended with status {status}"
    return answer


def test_forked_child_can_use_the_pool(rng):
    maps = rng.standard_normal((8, 7, 7)).astype(np.float32)
    want = render.upsample(maps, (50, 60))  # the parent's pool now exists, with its threads
    # The child must build its own pool instead of waiting on threads that do not exist in it.
    assert in_forked_child(lambda: str(np.array_equal(render.upsample(maps, (50, 60)), want))) == "True"


def test_thread_count_comes_from_environment(monkeypatch):
    import gradeclip

    render.normalize(np.ones((1, 2, 2)))  # make sure this process's pool exists
    monkeypatch.setenv("GRADECLIP_NUM_THREADS", "3")
    assert gradeclip.build_info()["threads"] == 3
    monkeypatch.setenv("GRADECLIP_NUM_THREADS", "zero")
    with pytest.raises(InputError, match="GRADECLIP_NUM_THREADS must be a positive integer"):
        gradeclip.build_info()
    # A forked child builds its pool from the environment it sees, so the bad value surfaces there.
    answer = in_forked_child(lambda: str(render.upsample(np.ones((1, 2, 2)), (3, 3)).sum()))
    assert answer.startswith("InputError: GRADECLIP_NUM_THREADS must be a positive integer")


# ImageExplanation views built on render.


def test_explanation_upsampled_and_normalized(tiny_model):
    import gradeclip

    images = torch.randn(2, 3, 32, 32)
    texts = F.normalize(torch.randn(3, 32), dim=-1)
    res = gradeclip.Explainer(tiny_model).explain_image(images, texts)
    b, t, h, w = res.maps.shape
    up = res.upsampled()
    assert up.shape == (2, 3, *res.image_size) and up.dtype == np.float32
    want = torch_upsample(res.maps.reshape(b * t, h, w).numpy(), res.image_size, "bilinear")
    np.testing.assert_allclose(up, want.reshape(up.shape), atol=1e-5, rtol=0)
    assert res.upsampled((7, 9)).shape == (2, 3, 7, 9)
    norm = res.normalized()
    np.testing.assert_array_equal(norm, np.stack([minmax(m) for m in up.reshape(b * t, *up.shape[2:])]).reshape(up.shape))


def test_docs_examples_run():
    """The examples in docs/render.md run and their assertions hold."""
    import pathlib
    import re

    text = (pathlib.Path(__file__).parents[1] / "docs" / "render.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 3
    for block in blocks:
        exec(compile(block, "docs/render.md", "exec"), {})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_are_moved_to_the_cpu(rng):
    maps = rng.standard_normal((2, 7, 7)).astype(np.float32)
    got = render.upsample(torch.from_numpy(maps).cuda().requires_grad_(), (30, 20))
    np.testing.assert_array_equal(got, render.upsample(maps, (30, 20)))
