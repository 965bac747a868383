"""The synthetic world: masks are exactly the drawn pixels, seeds reproduce, captions say only what is drawn."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from gradeclip.errors import InputError
from gradeclip.synth import (
    COLOURS,
    HELD_OUT_PAIRS,
    SHAPES,
    TRAIN_PAIRS,
    caption_of,
    describes,
    make_scene,
    make_scenes,
    random_caption,
)
from gradeclip.synth.scenes import BACKGROUND_NOISE, COLOUR_JITTER, FILL_NOISE, shape_mask
from gradeclip.synth.world import REGION_MARGIN, REGIONS, region_of

SCENES = [(split, i) for split in ("train", "val", "test") for i in range(0, 40, 3)]


@pytest.mark.parametrize("split,index", SCENES, ids=[f"{s}-{i}" for s, i in SCENES])
def test_masks_are_exactly_the_drawn_pixels(split, index):
    scene = make_scene(index, split, seed=3)
    k, h, w = scene.masks.shape
    assert k == len(scene.objects) >= 1 and (h, w) == scene.image.shape[:2]
    assert scene.masks.sum(0).max() <= 1, "objects overlap"
    union = scene.masks.any(0)
    # everything outside the masks is the untouched background
    np.testing.assert_array_equal(scene.image[~union], scene.background[~union])
    for mask, obj in zip(scene.masks, scene.objects):
        assert mask.sum() >= 20, f"{obj} is barely visible"
        pixels = scene.image[mask].astype(float)
        # inside, every pixel is the object's fill colour up to the per-pixel noise (5σ)
        assert np.abs(pixels - np.array(obj.rgb)).max() <= 5 * FILL_NOISE + 1
        # and the object's colour is nearest to its named colour among all colours
        mean = pixels.mean(0)
        nearest = min(COLOURS, key=lambda c: np.linalg.norm(mean - np.array(COLOURS[c])))
        assert nearest == obj.colour
        assert np.abs(np.array(obj.rgb) - np.array(COLOURS[obj.colour])).max() <= COLOUR_JITTER
        assert region_of(*obj.center, w) == obj.region


def test_background_differs_from_objects():
    """Objects are saturated, backgrounds grey-ish: the mask is recoverable from saturation alone."""
    for scene in make_scenes(20, "train", seed=1):
        img = scene.image.astype(float)
        saturation = img.max(-1) - img.min(-1)
        union = scene.masks.any(0)
        assert saturation[~union].mean() < 40 + 3 * BACKGROUND_NOISE
        for mask in scene.masks:
            assert saturation[mask].mean() > 70


@pytest.mark.parametrize("shape", SHAPES)
def test_shape_masks_have_the_expected_geometry(shape):
    """An independent check of the rasteriser: a circle is the pixels whose centres lie within r
    (up to the boundary ring), every shape lies within its radius and covers its centre."""
    size, center, radius = 64, (30.3, 33.6), 12.0
    mask = shape_mask(shape, center, radius, 10.0, size)
    yy, xx = np.mgrid[0:size, 0:size]
    dist = np.hypot(xx + 0.5 - center[0], yy + 0.5 - center[1])
    assert not mask[dist > radius + 1.5].any(), "pixels outside the bounding circle"
    assert mask[int(center[1]), int(center[0])]
    if shape == "circle":
        inside = dist < radius - 1.5
        assert mask[inside].all()
        assert abs(mask.sum() - math.pi * radius**2) < 2 * math.pi * radius


def test_seeds_reproduce_and_differ():
    a = make_scene(17, "test", seed=5)
    b = make_scene(17, "test", seed=5)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert a.objects == b.objects
    # scenes are random-access: drawing a range gives the same scene as drawing it alone
    assert make_scenes(3, "test", seed=5, start=16)[1].objects == a.objects
    assert not np.array_equal(make_scene(17, "test", seed=6).image, a.image)
    assert not np.array_equal(make_scene(18, "test", seed=5).image, a.image)
    assert not np.array_equal(make_scene(17, "val", seed=5).image, a.image)


def test_held_out_pairs_split():
    assert len(HELD_OUT_PAIRS) == 8 and len(TRAIN_PAIRS) == 56
    assert {c for c, _ in HELD_OUT_PAIRS} == set(COLOURS) and {s for _, s in HELD_OUT_PAIRS} == set(SHAPES)
    held = set(HELD_OUT_PAIRS)
    for split in ("train", "val"):
        for scene in make_scenes(200, split, seed=2):
            assert not {(o.colour, o.shape) for o in scene.objects} & held
    for scene in make_scenes(200, "test", seed=2):
        assert (scene.objects[0].colour, scene.objects[0].shape) in held


WORDS = re.compile(r"\b(" + "|".join(COLOURS) + r") (" + "|".join(SHAPES) + r")\b")


def _claims(text):
    """Parse a caption's text on its own: the (colour, shape) pairs it names, and sizes/regions said before/after."""
    phrases = re.split(r", | and ", text)
    claims = []
    for phrase in phrases:
        found = WORDS.findall(phrase)
        assert len(found) == 1, f"phrase {phrase!r} does not name exactly one coloured shape"
        size = re.search(r"\b(small|large)\b", phrase)
        region = next((name for name, said in REGIONS if phrase.endswith(said)), None)
        claims.append((*found[0], size.group(1) if size else None, region))
    return claims


def test_captions_mention_only_what_is_drawn():
    rng = np.random.default_rng(0)
    for scene in make_scenes(150, "train", seed=4) + make_scenes(50, "test", seed=4):
        for caption in (caption_of(scene), caption_of(scene, attributes=("colour", "shape")), random_caption(scene, rng)):
            claims = _claims(caption.text)
            assert len(claims) == len(caption.objects) == len(caption.mentions)
            for (colour, shape, size, region), k in zip(claims, caption.objects):
                obj = scene.objects[k]
                assert (obj.colour, obj.shape) == (colour, shape)
                assert size in (None, obj.size) and region in (None, obj.region)
            assert describes(caption, scene)
            assert caption.complete == (len(set(caption.objects)) == len(scene.objects))


def test_describes_rejects_wrong_scenes():
    """A complete caption with every attribute describes exactly the scenes with the same objects."""
    scenes = make_scenes(60, "train", seed=8)

    def content(scene):
        return sorted((o.colour, o.shape, o.size, o.region) for o in scene.objects)

    for scene in scenes:
        caption = caption_of(scene)
        for other in scenes:
            assert describes(caption, other) == (content(other) == content(scene))
    partial = caption_of(scenes[0], objects=(0,), attributes=("colour", "shape"))
    assert [describes(partial, s) for s in scenes] == [
        any((o.colour, o.shape) == (partial.mentions[0].colour, partial.mentions[0].shape) for o in s.objects) for s in scenes
    ]


def test_caption_inputs_are_checked():
    scene = make_scene(0)
    with pytest.raises(InputError, match="at least one"):
        caption_of(scene, objects=())
    with pytest.raises(InputError, match="out of range"):
        caption_of(scene, objects=(len(scene.objects),))
    with pytest.raises(InputError, match="attribute"):
        caption_of(scene, attributes=("texture",))
    with pytest.raises(InputError, match="split"):
        make_scene(0, "holdout")


def test_twins_differ_from_their_scene_in_shapes_or_one_place():
    kinds = set()
    for index in range(80):
        base = make_scene(index, "train", seed=9)
        twin = make_scene(index, "train", seed=9, twin=True)
        assert twin.twin and not base.twin
        np.testing.assert_array_equal(twin.background, base.background)
        assert len(twin.objects) == len(base.objects)
        reshaped = [k for k, (a, b) in enumerate(zip(base.objects, twin.objects)) if a.shape != b.shape]
        moved = [k for k, (a, b) in enumerate(zip(base.objects, twin.objects)) if a.center != b.center]
        assert bool(reshaped) != bool(moved), "a twin changes shapes or moves one object, not both, not neither"
        for k, (a, b) in enumerate(zip(base.objects, twin.objects)):
            assert (a.colour, a.size, a.radius, a.rgb) == (b.colour, b.size, b.radius, b.rgb)
            assert (b.colour, b.shape) in set(TRAIN_PAIRS)
            if k in moved:  # mirrored across a midline into another quadrant
                assert b.region != a.region and {abs(b.center[0] - a.center[0]), abs(b.center[1] - a.center[1])} - {0.0}
                assert {round(b.center[0] + a.center[0], 6), round(b.center[1] + a.center[1], 6)} & {64.0}
        if moved:
            kinds.add("move")
            assert len(moved) == 1
        elif len(reshaped) == 2:  # a swap: the same multiset of shapes
            kinds.add("swap")
            assert sorted(o.shape for o in base.objects) == sorted(o.shape for o in twin.objects)
        else:
            kinds.add("reshape")
        # the twin's masks are its own drawn pixels, like any scene's, and its objects do not touch
        assert twin.masks.sum(0).max() <= 1
        union = twin.masks.any(0)
        np.testing.assert_array_equal(twin.image[~union], twin.background[~union])
        assert not describes(caption_of(base), twin) and not describes(caption_of(twin), base)
    assert kinds == {"move", "swap", "reshape"}
    with pytest.raises(InputError, match="twins"):
        make_scene(0, "test", twin=True)


def test_object_centres_keep_clear_of_the_quadrant_midlines():
    for scene in make_scenes(100, "test", seed=2) + [make_scene(i, "train", 2, twin=True) for i in range(50)]:
        for obj in scene.objects:
            x, y = obj.center
            assert min(abs(x - 32), abs(y - 32)) >= REGION_MARGIN * 64 - 1e-9


def test_random_caption_rates():
    """``complete`` and ``attribute`` set how often a training caption names every object and
    states sizes and regions; the extremes are exact."""
    scenes = make_scenes(60, "train", seed=5)
    rng = np.random.default_rng(0)
    for scene in scenes:
        full = random_caption(scene, rng, complete=1.0, attribute=1.0)
        assert full.complete and all(m.size is not None and m.region is not None for m in full.mentions)
        bare = random_caption(scene, rng, complete=0.0, attribute=0.0)
        assert bare.complete == (len(scene.objects) == 1) and all(m.size is None and m.region is None for m in bare.mentions)
    many = [random_caption(s, rng, complete=0.75, attribute=0.75) for s in scenes * 5]
    multi = [c for c, s in zip(many, scenes * 5) if len(s.objects) > 1]
    assert 0.6 < np.mean([c.complete for c in multi]) < 0.9
    assert 0.6 < np.mean([m.size is not None for c in many for m in c.mentions]) < 0.9
    with pytest.raises(InputError, match="probabilities"):
        random_caption(scenes[0], rng, complete=1.5)
