"""pixel_order="argsort" (SPEC §12): deletion and insertion change pixels exactly in the order of
the authors' ``np.argsort(-heat)``, ties included."""

from __future__ import annotations

import numpy as np
import pytest

from gradeclip import InputError
from gradeclip.eval.perturbation import perturbation_steps
from gradeclip.eval.pixel_order import ordered_heat


def authors_changed(heat: np.ndarray, steps: int, eval_every: int) -> list[np.ndarray]:
    """Their ``delection_process`` written out: which pixels are changed at each checkpoint."""
    h, w = heat.shape
    normalised = heat - heat.min()
    normalised = normalised / normalised.max()
    order = np.argsort(-normalised.reshape(-1))
    once = max(1, int(h * w / (2 * steps)))
    out = []
    for step in range(eval_every, steps + 1, eval_every):
        changed = np.zeros(h * w, bool)
        changed[order[: step * once]] = True
        out.append(changed.reshape(h, w))
    return out


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
def test_argsort_order_matches_the_authors(mode):
    rng = np.random.default_rng(3)
    grid = rng.integers(0, 4, size=(5, 7)).astype(np.float32)  # few levels: many ties after upsampling
    heat = np.kron(grid, np.ones((9, 6), np.float32))  # 45 × 42, constant blocks
    image = rng.integers(1, 255, size=(*heat.shape, 3), dtype=np.uint8)
    ours = perturbation_steps(image, ordered_heat(heat, "argsort"), mode, steps=20, eval_every=5)[0]
    for k, expected in enumerate(authors_changed(heat, 20, 5), start=1):
        if mode == "insertion":  # the pixels copied in (the image has no zero byte)
            assert np.array_equal((ours[k] == image).all(-1), expected), k
        else:  # the others untouched; the changed ones filled (a random pixel equal to the original: ~1e-7)
            assert (ours[k][~expected] == image[~expected]).all(), k
            assert (ours[k][expected] != image[expected]).any(-1).all(), k
    stable = perturbation_steps(image, heat, mode, steps=20, eval_every=5)[0]
    assert not all(np.array_equal(a, b) for a, b in zip(stable, ours))  # the tie order really differs here


def test_stable_is_the_map_itself_and_bad_names_fail():
    heat = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert ordered_heat(heat) is heat
    with pytest.raises(InputError, match="pixel_order='random'"):
        ordered_heat(heat, "random")
