"""A few held-out scenes with their captions, ready to explain (for the demo and the docs)."""

from __future__ import annotations

from dataclasses import dataclass

from .captions import Caption, caption_of, referring_caption
from .scenes import DEFAULT_SIZE, Scene, make_scene


@dataclass(frozen=True)
class Example:
    """A scene to explain.

    Attributes:
        scene: the scene (``scene.pil()`` is its image, ``scene.masks`` the ground truth).
        caption: the complete caption (every object with every attribute).
        referring: per object, the shortest caption that picks it out alone (None when no caption
            can), in ``scene.objects`` order; its ground-truth mask is ``scene.masks[k]``.
    """

    scene: Scene
    caption: Caption
    referring: tuple[Caption | None, ...]


def examples(count: int = 4, split: str = "test", seed: int = 0, size: int = DEFAULT_SIZE, min_objects: int = 2) -> list[Example]:
    """The first ``count`` scenes of ``split`` with at least ``min_objects`` objects, with their captions."""
    out: list[Example] = []
    index = 0
    while len(out) < count:
        scene = make_scene(index, split, seed, size)
        index += 1
        if len(scene.objects) < min_objects:
            continue
        referring = tuple(referring_caption(scene, k) for k in range(len(scene.objects)))
        out.append(Example(scene, caption_of(scene), referring))
    return out
