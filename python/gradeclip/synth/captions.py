"""Captions of synthetic scenes from templates, with what each caption claims.

A :class:`Caption` keeps, beside its text, the objects it mentions (as attribute values), so
whether it truthfully describes any scene can be checked (:func:`describes`). Colour and shape
are always said; size and region are optional.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .scenes import Scene, SceneObject
from .world import REGION_PHRASE

ATTRIBUTES = ("size", "colour", "shape", "region")
PREFIXES = ("{}", "a photo of {}", "an image of {}", "there is {}", "a picture with {}")


@dataclass(frozen=True)
class Mention:
    """What a caption says about one object: colour and shape, and optionally size and region."""

    colour: str
    shape: str
    size: str | None = None
    region: str | None = None

    def matches(self, obj: SceneObject) -> bool:
        """Whether ``obj`` has every attribute this mention states."""
        return (
            obj.colour == self.colour
            and obj.shape == self.shape
            and (self.size is None or obj.size == self.size)
            and (self.region is None or obj.region == self.region)
        )

    def phrase(self) -> str:
        """``"a small red circle in the top left"`` (article, optional size, colour, shape, optional region)."""
        words = [w for w in (self.size, self.colour, self.shape) if w]
        article = "an" if words[0][0] in "aeiou" else "a"
        text = " ".join([article, *words])
        return f"{text} {REGION_PHRASE[self.region]}" if self.region else text


@dataclass(frozen=True)
class Caption:
    """A caption and its claims.

    Attributes:
        text: the caption.
        mentions: one :class:`Mention` per mentioned object, in the caption's order.
        objects: indices into the scene's objects of the mentioned objects (same order).
        complete: True when the caption mentions every object of its scene.
    """

    text: str
    mentions: tuple[Mention, ...]
    objects: tuple[int, ...]
    complete: bool


def mention(obj: SceneObject, attributes: tuple[str, ...] = ATTRIBUTES) -> Mention:
    """The :class:`Mention` of ``obj`` stating ``attributes`` (colour and shape are always stated)."""
    unknown = set(attributes) - set(ATTRIBUTES)
    if unknown:
        raise InputError(f"unknown caption attribute(s) {sorted(unknown)}; choose from {ATTRIBUTES}")
    return Mention(
        colour=obj.colour,
        shape=obj.shape,
        size=obj.size if "size" in attributes else None,
        region=obj.region if "region" in attributes else None,
    )


def join_phrases(phrases: list[str]) -> str:
    """``"A"``, ``"A and B"``, ``"A, B and C"``."""
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def caption_of(scene: Scene, objects: tuple[int, ...] | None = None, attributes: tuple[str, ...] = ATTRIBUTES, prefix: str = "{}") -> Caption:
    """The caption of ``objects`` (indices; all objects in scene order when None) stating ``attributes``.

    ``prefix`` is a template with one ``{}``, e.g. ``"a photo of {}"``.
    """
    if objects is None:
        objects = tuple(range(len(scene.objects)))
    if not objects:
        raise InputError("a caption must mention at least one object")
    if any(not 0 <= k < len(scene.objects) for k in objects):
        raise InputError(f"object indices {objects} out of range for a scene with {len(scene.objects)} objects")
    mentions = tuple(mention(scene.objects[k], attributes) for k in objects)
    text = prefix.format(join_phrases([m.phrase() for m in mentions]))
    return Caption(text, mentions, tuple(objects), complete=len(set(objects)) == len(scene.objects))


def random_caption(scene: Scene, rng: np.random.Generator, complete: float = 0.5, attribute: float = 0.5) -> Caption:
    """A training caption: with probability ``complete`` every object, otherwise a random non-empty
    subset, in a random order; each object's size and region each stated with probability
    ``attribute``; a random prefix."""
    if not (0.0 <= complete <= 1.0 and 0.0 <= attribute <= 1.0):
        raise InputError(f"complete and attribute are probabilities in [0, 1], got {complete} and {attribute}")
    k = len(scene.objects)
    if k == 1 or rng.random() < complete:
        chosen = list(range(k))
    else:
        chosen = list(rng.choice(k, size=int(rng.integers(1, k)), replace=False))
    order = [int(i) for i in rng.permutation(chosen)]
    mentions = []
    for i in order:
        attrs = ("colour", "shape") + tuple(a for a in ("size", "region") if rng.random() < attribute)
        mentions.append(mention(scene.objects[i], attrs))
    prefix = PREFIXES[int(rng.integers(len(PREFIXES)))]
    text = prefix.format(join_phrases([m.phrase() for m in mentions]))
    return Caption(text, tuple(mentions), tuple(order), complete=len(order) == k)


REFERRING_ATTRIBUTES: tuple[tuple[str, ...], ...] = (
    ("colour", "shape"),
    ("size", "colour", "shape"),
    ("colour", "shape", "region"),
    ("size", "colour", "shape", "region"),
)


def referring_caption(scene: Scene, k: int, prefix: str = "{}") -> Caption | None:
    """The shortest caption naming object ``k`` alone that fits no other object of the scene
    (colour + shape, then adding size, region, or both); None when even all four fit another object."""
    for attributes in REFERRING_ATTRIBUTES:
        caption = caption_of(scene, (k,), attributes, prefix)
        if not any(caption.mentions[0].matches(o) for j, o in enumerate(scene.objects) if j != k):
            return caption
    return None


def describes(caption: Caption, scene: Scene) -> bool:
    """Whether ``caption`` truthfully describes ``scene``: each mention matches a distinct object
    and, for a complete caption, there are no other objects."""
    objs = scene.objects
    if len(caption.mentions) > len(objs) or (caption.complete and len(objs) != len(caption.mentions)):
        return False
    candidates = [[j for j, o in enumerate(objs) if m.matches(o)] for m in caption.mentions]
    if not all(candidates):
        return False
    return any(len(set(choice)) == len(choice) for choice in itertools.product(*candidates))
