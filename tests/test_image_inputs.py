"""Images in as people have them (PIL, arrays, paths), preprocessed as the model's own preprocessing
does, and maps drawn back over the original at its own size."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import gradeclip
from gradeclip import render
from gradeclip.image_inputs import DIM, overlay_original
from gradeclip.preprocessing import ImageMapping, shortest_side_mapping

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs" / "examples"))
import hf_offline  # noqa: E402


@pytest.fixture(scope="module")
def explainer(tiny_model, tokenizer):
    return gradeclip.Explainer(tiny_model, tokenizer)


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def smooth(height: int, width: int) -> np.ndarray:
    """A photo-like image (smooth colour gradients with a few waves), where resamplers agree."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    channels = [np.sin(6 * x + 2 * y), np.cos(5 * y - 3 * x), np.sin(4 * (x + y)) * np.cos(3 * x)]
    return np.stack([(127.5 + 120 * c) for c in channels], axis=-1).round().astype(np.uint8)


def test_pil_arrays_and_paths_are_preprocessed_as_open_clip_does(explainer, tiny_model, tmp_path):
    import open_clip

    preprocess = open_clip.image_transform(tiny_model.visual.image_size, is_train=False)
    arrays = [photo(45, 70), photo(80, 33, 1), photo(32, 32, 2)]
    Image.fromarray(arrays[1]).save(tmp_path / "b.png")
    x, inputs = explainer.images([Image.fromarray(arrays[0]), tmp_path / "b.png", arrays[2]])
    want = torch.stack([preprocess(Image.fromarray(a)) for a in arrays])
    torch.testing.assert_close(x, want, atol=1e-6, rtol=0)
    assert [i.pixels.shape[:2] for i in inputs] == [(45, 70), (80, 33), (32, 32)]
    np.testing.assert_array_equal(inputs[1].pixels, arrays[1])
    grey, _ = explainer.images(arrays[0][..., 0])
    torch.testing.assert_close(grey[0], preprocess(Image.fromarray(arrays[0][..., 0]).convert("RGB")), atol=1e-6, rtol=0)


def test_mapping_finds_a_marker_where_open_clip_put_it():
    """A bright block in the original, run through open_clip's own preprocessing, is found in the
    model input; mapping its position back through ``box()`` lands on the block."""
    import open_clip

    preprocess = open_clip.image_transform(64, is_train=False)
    for height, width, (y, x) in ((90, 200, (40, 120)), (300, 120, (170, 50))):
        image = np.zeros((height, width, 3), np.uint8)
        image[y - 4 : y + 4, x - 4 : x + 4] = 255
        seen = preprocess(Image.fromarray(image))[0]
        iy, ix = np.unravel_index(int(seen.argmax()), seen.shape)
        top, left, bottom, right = shortest_side_mapping(height, width, 64).box()
        back = (top + (iy + 0.5) * (bottom - top) / 64, left + (ix + 0.5) * (right - left) / 64)
        assert abs(back[0] - y) < 5 and abs(back[1] - x) < 5, (back, (y, x))


def test_overlay_on_the_original_undoes_resize_and_crop(explainer):
    original = photo(40, 100)
    res = explainer.explain_image(Image.fromarray(original), ["a cat", "a dog"])
    mapping = res.inputs[0].mapping
    assert mapping == ImageMapping((40, 100), (32, 80), (0, 24), (32, 32))
    out = res.overlay(0, 1)
    assert out.shape == (40, 100, 3)
    top, left, bottom, right = mapping.box()  # (0, 30, 40, 70): the crop kept columns 30..69
    assert (top, left, bottom, right) == (0.0, 30.0, 40.0, 70.0)
    dimmed = (original.astype(np.float32) * DIM + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(out[:, :30], dimmed[:, :30])  # the cropped-away border, dimmed
    np.testing.assert_array_equal(out[:, 70:], dimmed[:, 70:])
    grid = res.maps[0, 1].numpy()
    hot = np.unravel_index(int(np.argmax(grid)), grid.shape)
    heat = render.normalize(render.upsample(grid[None], (40, 40)))[0]
    assert heat[hot[0] * 10 + 5, hot[1] * 10 + 5] > 0.9  # the map's hottest cell sits over its part of the box
    np.testing.assert_array_equal(out[:, 30:70], render.overlay(np.ascontiguousarray(original[:, 30:70])[None], grid[None])[0])


def test_uncropped_overlay_is_the_map_over_the_whole_image():
    original = photo(50, 50)
    grid = np.random.default_rng(1).random((4, 4)).astype(np.float32)
    mapping = ImageMapping((50, 50), (32, 32), (0, 0), (32, 32))
    np.testing.assert_array_equal(overlay_original(original, grid, mapping), render.overlay(original[None], grid[None])[0])


def test_save_and_html_show_the_overlay(explainer, tmp_path):
    res = explainer.explain_image([photo(40, 60), photo(64, 48, 1)], ["a cat"])
    res.save(tmp_path / "o.png", 1, 0)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "o.png")), res.overlay(1, 0))
    page = res._repr_html_()
    assert "overlays on the images as given" in page and page.count("<img") == 2
    assert 'width="72" height="96"' in page  # image 1 keeps its 48×64 aspect ratio (shown enlarged)


def test_native_resolution_matches_native_preprocess(explainer, tiny_model):
    image = Image.fromarray(photo(50, 90))
    res = explainer.explain_image(image, ["a cat"], resolution="native")
    x = gradeclip.native_preprocess(image, tiny_model)[None]
    torch.testing.assert_close(explainer.images(image, "native")[0], x, atol=1e-6, rtol=0)
    assert res.maps.shape[-2:] == (x.shape[-2] // 8, x.shape[-1] // 8) and res.overlay().shape == (50, 90, 3)
    assert res.inputs[0].mapping.box() == (0.0, 0.0, 50.0, 90.0)
    capped = explainer.images(image, "native", max_short_side=16)[0]
    assert capped.shape[-2:] == (16, 32)


def test_text_and_pair_take_images(explainer):
    image = Image.fromarray(photo(40, 60))
    text = explainer.explain_text(image, ["a red cat"], n_layers=2)
    same = explainer.explain_text(explainer.images(image)[0], ["a red cat"], n_layers=2)
    torch.testing.assert_close(text.importance, same.importance)
    pair = explainer.explain_pair(image, "a red cat", n_text_layers=2)
    assert pair.visual.overlay().shape == (40, 60, 3) and [w for w, _ in pair.words] == ["a", "red", "cat"]


def test_hf_models_preprocess_as_their_processors(tmp_path):
    for save in (hf_offline.save_tiny_clip, hf_offline.save_tiny_blip):
        model, preprocess, _ = gradeclip.load(str(save(tmp_path / save.__name__)))
        images = [Image.fromarray(smooth(45, 70)), Image.fromarray(smooth(90, 40))]
        x, inputs = gradeclip.Explainer(model).images(images)
        want = torch.stack([preprocess(i) for i in images])
        # the same geometry; transformers' (torchvision) resampler differs from Pillow's by a level or two
        torch.testing.assert_close(x, want, atol=3 / 255 / 0.26, rtol=0)
    assert inputs[1].mapping == ImageMapping((90, 40), (32, 32), (0, 0), (32, 32))  # BLIP squashes


def test_bad_images_are_named(explainer, tmp_path):
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(gradeclip.InputError, match=r"images\[1\]: .*junk.png"):
        explainer.explain_image([photo(40, 40), tmp_path / "junk.png"], ["a cat"])
    with pytest.raises(gradeclip.InputError, match="uint8"):
        explainer.explain_image(np.zeros((8, 8, 3), np.float32), ["a cat"])
    with pytest.raises(gradeclip.InputError, match="different sizes"):
        explainer.explain_image([photo(40, 40), photo(40, 80)], ["a cat"], resolution="native")
    with pytest.raises(gradeclip.InputError, match="resolution= and max_short_side= apply to images"):
        explainer.explain_image(torch.randn(1, 3, 32, 32), ["a cat"], resolution="native")
    with pytest.raises(gradeclip.InputError, match="preprocessed tensors"):
        explainer.explain_image(torch.randn(1, 3, 32, 32), ["a cat"]).overlay()
    with pytest.raises(gradeclip.InputError, match="t must be an integer in 0..0"):
        explainer.explain_image(photo(40, 40), ["a cat"]).overlay(0, 1)
