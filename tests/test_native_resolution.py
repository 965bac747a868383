"""resolution="native" (SPEC §4): images keep their aspect ratio; maps come on non-square grids."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import gradeclip
from gradeclip import InputError
from gradeclip.preprocessing import native_size


@pytest.mark.parametrize(
    "size,patch,cap,expected",
    [
        ((300, 451), (16, 16), None, (304, 448)),
        ((7, 9), (16, 16), None, (16, 16)),
        ((1200, 800), (32, 32), 640, (960, 640)),
        ((500, 700), (16, 16), 640, (496, 704)),
    ],
    ids=["round", "at-least-one-patch", "capped", "cap-not-reached"],
)
def test_native_size(size, patch, cap, expected):
    assert native_size(*size, patch, cap) == expected


def test_real_photo_at_its_own_aspect_ratio(vit_b16, tokenizer):
    from skimage import data

    photo = data.chelsea()  # 300×451 RGB
    x = gradeclip.native_preprocess(Image.fromarray(photo), vit_b16)
    assert x.shape == (3, 304, 448) and x.dtype == torch.float32
    same = gradeclip.native_preprocess(photo, vit_b16)
    torch.testing.assert_close(x, same)
    res = gradeclip.Explainer(vit_b16, tokenizer).explain_image(x[None], ["a cat", "a dog"])
    assert res.maps.shape == (1, 2, 19, 28)
    assert res.image_size == (304, 448)
    assert torch.isfinite(res.maps).all() and (res.maps.flatten(2).amax(-1) > 0).all()


def test_native_preprocess_rejects_non_images(vit_b16):
    with pytest.raises(InputError, match="uint8"):
        gradeclip.native_preprocess(np.zeros((10, 10), dtype=np.float32), vit_b16)
    with pytest.raises(InputError, match="PIL image"):
        gradeclip.native_preprocess("cat.jpg", vit_b16)
