"""Curve AUC and localisation metrics against numpy / scikit-learn references (SPEC §7, §8)."""

from __future__ import annotations

import gradeclip.eval as ev
import numpy as np
import pytest
import reference_eval as ref
from gradeclip.errors import InputError
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays


@pytest.mark.parametrize("k", [2, 3, 11, 101])
def test_auc_equals_trapezoid(k):
    rng = np.random.default_rng(k)
    curves = rng.random((7, k))
    np.testing.assert_allclose(ev.auc(curves), [ref.trapezoid_auc(c) for c in curves], rtol=1e-12, atol=1e-15)
    assert ev.auc(curves[0]) == pytest.approx(ref.trapezoid_auc(curves[0]), rel=1e-12)


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 30), st.floats(-5, 5))
def test_auc_of_a_constant_curve_is_the_constant(k, value):
    assert ev.auc(np.full(k, value)) == pytest.approx(value, rel=1e-12, abs=1e-12)


def test_auc_rejects_bad_curves():
    for bad in ([0.5], [[0.1, np.nan]], np.zeros((2, 2, 2))):
        with pytest.raises(InputError):
            ev.auc(bad)


def mask_of(rng, h, w):
    yy, xx = np.mgrid[:h, :w]
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    mask = (yy - cy) ** 2 / max(1, h / 3) ** 2 + (xx - cx) ** 2 / max(1, w / 3) ** 2 < 1
    mask[int(cy) % h, int(cx) % w] = True
    return mask


CASES = [(37, 53, "random"), (1, 5, "random"), (64, 64, "ties"), (30, 17, "constant"), (45, 45, "smooth"), (20, 33, "negative")]


def heat_of(rng, h, w, kind):
    if kind == "ties":
        return np.round(rng.random((h, w)) * 3).astype(np.float32)
    if kind == "constant":
        return np.full((h, w), 0.7, np.float32)
    if kind == "smooth":
        yy, xx = np.mgrid[:h, :w]
        return np.exp(-((yy - h / 2) ** 2 + (xx - w / 3) ** 2) / 100).astype(np.float32)
    if kind == "negative":
        return (rng.normal(size=(h, w)) - 5).astype(np.float32)
    return rng.random((h, w)).astype(np.float32)


@pytest.mark.parametrize("h,w,kind", CASES, ids=[f"{h}x{w}-{k}" for h, w, k in CASES])
def test_localization_metrics_equal_the_reference(h, w, kind):
    rng = np.random.default_rng(h * w)
    heats = [heat_of(rng, h, w, kind) for _ in range(4)]
    masks = [mask_of(rng, h, w) for _ in range(4)]
    got = ev.localization_metrics(np.stack(heats), np.stack(masks))
    assert set(got) == set(ev.LOCALIZATION_METRICS)
    for i, (heat, mask) in enumerate(zip(heats, masks)):
        expected = ref.localization_bounds(heat, mask)
        for name in ev.LOCALIZATION_METRICS:
            assert ref.within(got[name][i], expected[name]), (name, i, got[name][i], expected[name])


def test_mixed_sizes_and_mask_types():
    rng = np.random.default_rng(9)
    heats = [heat_of(rng, 20, 30, "random"), heat_of(rng, 31, 7, "ties")]
    masks = [mask_of(rng, 20, 30).astype(np.int64) * 7, mask_of(rng, 31, 7)]
    got = ev.localization_metrics(heats, masks)
    for i in range(2):
        expected = ref.localization_bounds(heats[i], masks[i] != 0)
        assert ref.within(got["average_precision"][i], expected["average_precision"])
        assert ref.within(got["mask_iou"][i], expected["mask_iou"], rel=1e-12)


def test_masks_with_values_that_wrap_in_uint8_still_count():
    heat = np.arange(12, dtype=np.float32).reshape(3, 4)
    mask = np.zeros((3, 4), np.int64)
    mask[2, 3] = 256  # would be 0 if cast to uint8
    assert ev.localization_metrics(heat, mask)["point_game"][0] == 1.0


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 9), st.integers(1, 9)), elements=st.floats(-1e3, 1e3, width=32)))
def test_metrics_stay_in_unit_interval(heat):
    mask = np.zeros(heat.shape, bool)
    mask.flat[0] = True
    got = ev.localization_metrics(heat, mask)
    for name, value in got.items():
        assert 0.0 <= value[0] <= 1.0, name


@pytest.mark.parametrize(
    "heat,mask",
    [
        (np.zeros((3, 3), np.float32), np.zeros((3, 3), bool)),
        (np.zeros((3, 4), np.float32), np.ones((3, 3), bool)),
        (np.array([[np.nan, 0.0]], np.float32), np.ones((1, 2), bool)),
    ],
    ids=["empty-mask", "shape", "nan"],
)
def test_bad_localization_inputs(heat, mask):
    with pytest.raises(InputError):
        ev.localization_metrics(heat, mask)
