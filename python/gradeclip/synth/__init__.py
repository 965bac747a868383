"""A small world with ground truth: seeded synthetic scenes with exact masks and captions.

See ``docs/synth.md``.
"""

from __future__ import annotations

from .captions import Caption, Mention, caption_of, describes, random_caption, referring_caption
from .examples import Example, examples
from .scenes import Scene, SceneObject, make_scene, make_scenes
from .world import COLOURS, HELD_OUT_PAIRS, REGIONS, SHAPES, SIZES, TRAIN_PAIRS

__all__ = [
    "COLOURS",
    "Caption",
    "Example",
    "HELD_OUT_PAIRS",
    "Mention",
    "REGIONS",
    "SHAPES",
    "SIZES",
    "Scene",
    "SceneObject",
    "TRAIN_PAIRS",
    "caption_of",
    "describes",
    "examples",
    "make_scene",
    "make_scenes",
    "random_caption",
    "referring_caption",
]
