"""Rust deletion/insertion checkpoints and CLIP preprocessing against numpy / Pillow references."""

from __future__ import annotations

import gradeclip.eval as ev
import numpy as np
import pytest
import reference_eval as ref
import skimage.data
from gradeclip.errors import InputError

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
ONE_LEVEL = 1 / 255 / min(STD)  # one 8-bit step in normalised units, for the widest channel


def random_case(rng, h, w, ties=False):
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    heat = rng.normal(size=(h, w)).astype(np.float32)
    if ties:  # few distinct values, plus signed zeros that must tie
        heat = np.round(heat * 2).astype(np.float32)
        heat[rng.random((h, w)) < 0.1] = -0.0
    return image, heat


SHAPES = [(37, 53, False), (53, 37, True), (1, 1, False), (5, 3, True), (64, 64, True), (100, 201, False)]


@pytest.mark.parametrize("h,w,ties", SHAPES, ids=[f"{h}x{w}{'-ties' if t else ''}" for h, w, t in SHAPES])
def test_insertion_equals_numpy_pixel_for_pixel(h, w, ties):
    rng = np.random.default_rng(h * 1000 + w)
    image, heat = random_case(rng, h, w, ties)
    [got] = ev.perturbation_steps(image, heat, "insertion")
    np.testing.assert_array_equal(got, ref.checkpoints(image, heat, "insertion"))


@pytest.mark.parametrize("h,w,ties", SHAPES, ids=[f"{h}x{w}{'-ties' if t else ''}" for h, w, t in SHAPES])
def test_deletion_equals_numpy_with_the_documented_fill(h, w, ties):
    rng = np.random.default_rng(h * 7 + w)
    image, heat = random_case(rng, h, w, ties)
    [got] = ev.perturbation_steps(image, heat, "deletion", seed=12345, streams=[7])
    np.testing.assert_array_equal(got, ref.checkpoints(image, heat, "deletion", seed=12345, stream=7))


def test_deletion_replaces_exactly_the_ranked_pixels():
    """Whatever the fill's values: run from an all-0 and an all-255 start with the same fill; a
    pixel was replaced iff it left its start in either run (no triple is both all-0 and all-255)."""
    rng = np.random.default_rng(3)
    _, heat = random_case(rng, 41, 29, ties=True)
    [a] = ev.perturbation_steps(np.zeros((41, 29, 3), np.uint8), heat, "deletion", seed=1)
    [b] = ev.perturbation_steps(np.full((41, 29, 3), 255, np.uint8), heat, "deletion", seed=1)
    replaced = ((a != 0).any(-1) | (b != 255).any(-1)).reshape(11, -1)
    order = np.argsort(-heat.ravel(), kind="stable")
    n = max(1, heat.size // 200)
    for k in range(11):
        expected = np.zeros(heat.size, bool)
        expected[order[: min(k * 10 * n, heat.size)]] = True
        np.testing.assert_array_equal(replaced[k], expected)


def test_fill_is_uniform_reproducible_and_per_stream():
    rng = np.random.default_rng(0)
    image, heat = random_case(rng, 200, 200)
    [d1] = ev.perturbation_steps(image, heat, "deletion", seed=99)
    [d2] = ev.perturbation_steps(image, heat, "deletion", seed=99)
    [d3] = ev.perturbation_steps(image, heat, "deletion", seed=100)
    np.testing.assert_array_equal(d1, d2)
    assert (d1[-1] != d3[-1]).mean() > 0.4
    order = np.argsort(-heat.ravel(), kind="stable")[: 100 * 200]
    fill = d1[-1].reshape(-1, 3)[order].ravel()
    counts = np.bincount(fill, minlength=256)
    expected = fill.size / 256
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert 255 - 6 * np.sqrt(2 * 255) < chi2 < 255 + 6 * np.sqrt(2 * 255), chi2  # 255 degrees of freedom
    assert fill.min() == 0 and fill.max() == 255
    assert abs(fill.mean() - 127.5) < 1.5
    # an image's fill depends on its stream only, not on the batch it is in
    pair = ev.perturbation_steps([image, image[:50]], [heat, heat[:50]], "deletion", seed=99, streams=[0, 5])
    alone = ev.perturbation_steps(image[:50], heat[:50], "deletion", seed=99, streams=[5])
    np.testing.assert_array_equal(pair[0], d1)
    np.testing.assert_array_equal(pair[1], alone[0])


@pytest.mark.parametrize("steps,eval_every", [(100, 10), (20, 5), (7, 7), (30, 1)])
def test_schedule_shapes_and_fractions(steps, eval_every):
    rng = np.random.default_rng(steps)
    image, heat = random_case(rng, 23, 31)
    [got] = ev.perturbation_steps(image, heat, "insertion", steps, eval_every)
    assert got.shape == (1 + steps // eval_every, 23, 31, 3)
    np.testing.assert_array_equal(got, ref.checkpoints(image, heat, "insertion", steps, eval_every))
    fractions = ev.checkpoint_fractions(steps, eval_every)
    assert fractions[0] == 0 and fractions[-1] == 0.5 and len(fractions) == got.shape[0]


def test_torch_inputs_and_lists_of_mixed_sizes():
    import torch

    rng = np.random.default_rng(5)
    cases = [random_case(rng, 17, 9), random_case(rng, 8, 30)]
    out = ev.perturbation_steps(
        [torch.from_numpy(i) for i, _ in cases], [torch.from_numpy(h).double() for _, h in cases], "insertion"
    )
    for got, (image, heat) in zip(out, cases):
        np.testing.assert_array_equal(got, ref.checkpoints(image, heat, "insertion"))


@pytest.mark.parametrize(
    "bad",
    [
        {"maps": np.full((10, 12), np.nan, np.float32)},
        {"maps": np.where(np.eye(10, 12) > 0, np.inf, 0).astype(np.float32)},
        {"maps": np.zeros((12, 10), np.float32)},
        {"images": np.zeros((10, 12, 3), np.float32)},
        {"images": np.zeros((10, 12), np.uint8)},
        {"mode": "erase"},
        {"steps": 100, "eval_every": 7},
        {"steps": 0},
        {"output_size": 16},
        {"output_size": 0, "mean": MEAN, "std": STD},
        {"output_size": 16, "mean": MEAN, "std": (1.0, 0.0, 1.0)},
        {"streams": [1, 2]},
    ],
    ids=[
        "nan",
        "inf",
        "shape",
        "float-image",
        "grey-image",
        "mode",
        "divisor",
        "zero-steps",
        "no-mean",
        "size-0",
        "std-0",
        "streams",
    ],
)
def test_bad_inputs_raise_input_error(bad):
    args = {"images": np.zeros((10, 12, 3), np.uint8), "maps": np.zeros((10, 12), np.float32)}
    args.update(bad)
    with pytest.raises(InputError):
        ev.perturbation_steps(args.pop("images"), args.pop("maps"), **args)


def test_nan_error_names_the_image_and_pixel():
    maps = [np.zeros((4, 4), np.float32), np.zeros((4, 4), np.float32)]
    maps[1][2, 3] = np.nan
    with pytest.raises(InputError, match=r"image 1: .*row 2, column 3"):
        ev.perturbation_steps([np.zeros((4, 4, 3), np.uint8)] * 2, maps)


PHOTOS = {
    "astronaut": skimage.data.astronaut,
    "chelsea": skimage.data.chelsea,
    "coffee": skimage.data.coffee,
    "rocket": skimage.data.rocket,
}


@pytest.fixture(scope="module")
def openclip_preprocess():
    import open_clip

    def make(size):
        return open_clip.image_transform(size, is_train=False, mean=MEAN, std=STD)

    return make


READY_CASES = [(photo, mode, 224) for photo, mode in zip(PHOTOS, ev.MODES * 2)] + [
    (photo, mode, 32) for photo in PHOTOS for mode in ev.MODES
]


@pytest.mark.parametrize("photo,mode,size", READY_CASES, ids=[f"{p}-{m}-{s}" for p, m, s in READY_CASES])
def test_model_ready_batch_within_one_level_of_pillow_and_open_clip(photo, mode, size, openclip_preprocess):
    image = PHOTOS[photo]()
    rng = np.random.default_rng(1)
    heat = np.kron(rng.random((7, 7)), np.ones((80, 100)))[: image.shape[0], : image.shape[1]].astype(np.float32)
    heat = np.pad(heat, ((0, image.shape[0] - heat.shape[0]), (0, image.shape[1] - heat.shape[1])))
    preprocess = openclip_preprocess(size)
    frames = ev.perturbation_steps(image, heat, mode, seed=3)[0]
    batch = ev.perturbation_steps(image, heat, mode, seed=3, output_size=size, mean=MEAN, std=STD)
    assert batch.shape == (1, 11, 3, size, size) and batch.dtype == np.float32
    expected = np.stack([ref.pillow_model_input(frame, preprocess) for frame in frames])
    assert np.abs(batch[0] - expected).max() <= ONE_LEVEL + 1e-6


@pytest.mark.parametrize("h,w", [(97, 61), (61, 97), (224, 500), (225, 224), (40, 30), (31, 31)])
def test_geometry_matches_pillow_on_odd_sizes(h, w, openclip_preprocess):
    rng = np.random.default_rng(h + w)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    for size in (24, 32):
        crop = ev.resize_center_crop(image, size)[0]
        assert np.abs(crop.astype(int) - ref.pillow_geometry(image, size).astype(int)).max() <= 1
        ready = ev.model_ready(image, size, MEAN, STD)[0]
        assert np.abs(ready - ref.pillow_model_input(image, openclip_preprocess(size))).max() <= ONE_LEVEL + 1e-6


@pytest.mark.parametrize("h,w", [(97, 61), (61, 97), (224, 500), (225, 224), (31, 31)])
def test_model_input_says_where_torchvision_crops(h, w):
    """``model_input``'s mapping locates the model input in the original: Pillow's resize to
    ``resized`` cut at ``offset`` is exactly torchvision's Resize + CenterCrop."""
    from gradeclip.preprocessing import Geometry, model_input
    from PIL import Image
    from torchvision.transforms import CenterCrop, InterpolationMode, Resize

    image = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    for size in (24, 32):
        pixels, mapping = model_input(image, Geometry(size, MEAN, STD))
        pil = Image.fromarray(image)
        expected = np.asarray(CenterCrop(size)(Resize(size, interpolation=InterpolationMode.BICUBIC)(pil)))
        resized = np.asarray(pil.resize(mapping.resized[::-1], Image.Resampling.BICUBIC))
        top, left = mapping.offset
        np.testing.assert_array_equal(resized[top : top + size, left : left + size], expected)
        bottom, right = mapping.box()[2:]
        assert mapping.original == (h, w) and bottom <= h + 1e-9 and right <= w + 1e-9
        assert pixels.shape == (1, 3, size, size)
        np.testing.assert_array_equal(pixels.numpy(), ev.model_ready(image, size, MEAN, STD))
