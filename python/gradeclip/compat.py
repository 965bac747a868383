"""Presets that reproduce another implementation's choices (SPEC §12).

``compat="authors"`` is the form of the paper authors' released code (github.com/Cyang-Zhao/Grad-Eclip):
every part is also its own option, and a part given explicitly wins over the preset.

| where | option | gradeclip's default | ``"authors"`` |
|---|---|---|---|
| visual map (``explain_image``) | ``qk_space`` | ``"attention"`` | ``"out_proj"`` (``imagenet_eval_*.py``) |
| textual importance (``explain_text``) | ``lambda_keys`` | ``"attended"`` (tokens 0..EOT) | ``"context"`` (all L positions, padding included) |
| textual importance (``explain_text``) | ``relu`` | ``"per_layer"`` | ``"after_sum"`` |
| input geometry (:func:`gradeclip.native_preprocess`) | ``geometry`` | ``"gradeclip"`` | ``"authors"`` (shorter side ≤ 640, then ``int(x/p + 0.5)·p``) |
| deletion / insertion order (``eval``) | ``pixel_order`` | ``"stable"`` | ``"argsort"`` (NumPy's default sort of ``−heat``) |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import InputError

COMPATS = ("authors",)

#: the preset's option values, per place they apply
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "authors": {
        "image": {"qk_space": "out_proj"},
        "text": {"lambda_keys": "context", "relu": "after_sum"},
        "geometry": {"geometry": "authors", "max_short_side": 640},
        "eval": {"pixel_order": "argsort", "resolution": "native"},
    },
}

#: gradeclip's own value of every option a preset sets (what ``compat=None`` gives)
DEFAULTS: dict[str, dict[str, Any]] = {
    "image": {"qk_space": "attention"},
    "text": {"qk_space": "attention", "lambda_keys": "attended", "relu": "per_layer"},
    "geometry": {"geometry": "gradeclip", "max_short_side": None},
    "eval": {"pixel_order": "stable", "resolution": "model"},
}


def check_compat(compat: str | None, flag: str = "compat") -> None:
    """Raise :class:`InputError` unless ``compat`` is None or a known preset (``flag`` names the argument)."""
    if compat is not None and compat not in COMPATS:
        raise InputError(f"{flag}={compat!r} is not a known preset; choose from {', '.join(map(repr, COMPATS))} (or leave it out)")


def resolve(compat: str | None, where: str, given: dict[str, Any]) -> dict[str, Any]:
    """The options for ``where`` (``"image"``, ``"text"``, ``"geometry"``, ``"eval"``): gradeclip's
    defaults, overlaid with the preset's values, overlaid with the options in ``given`` that are
    not None. Returns a new dict holding every option of ``DEFAULTS[where]`` plus any other given."""
    check_compat(compat)
    out = dict(DEFAULTS[where])
    if compat is not None:
        out.update(PRESETS[compat][where])
    out.update({name: value for name, value in given.items() if value is not None})
    return out


@dataclass(frozen=True)
class EvalForm:
    """How an evaluation explains and perturbs, after a preset (SPEC §12).

    Attributes:
        options: the method's options (the preset's image part under the given ones).
        resolution: ``"model"`` or ``"native"``.
        max_short_side: the native cap, applied by :attr:`geometry`'s rule.
        geometry: ``"gradeclip"`` (one resize, :func:`gradeclip.preprocessing.native_size`) or
            ``"authors"`` (the image first capped by :func:`gradeclip.preprocessing.authors_cap`:
            maps, perturbation and scores are all on the capped image, as in their scripts).
        pixel_order: ``"stable"`` or ``"argsort"`` (:mod:`gradeclip.eval.pixel_order`).
    """

    options: dict[str, Any]
    resolution: str
    max_short_side: int | None
    geometry: str
    pixel_order: str

    def settings(self) -> dict[str, Any]:
        """The parts a result records beyond gradeclip's own settings (empty for gradeclip's defaults)."""
        extra: dict[str, Any] = {}
        if self.geometry != "gradeclip":
            extra["geometry"] = self.geometry
        if self.pixel_order != "stable":
            extra["pixel_order"] = self.pixel_order
        return extra


def eval_form(
    compat: str | None,
    method: str,
    options: dict[str, Any] | None,
    resolution: str | None,
    max_short_side: int | None,
    pixel_order: str | None = None,
) -> EvalForm:
    """Resolve an evaluation's explanation settings: given values win over the preset's, the
    preset's over gradeclip's defaults. ``compat`` applies to ``method="gradeclip"`` only (the
    authors' scripts explain the baselines at the model's 224-px input); :class:`InputError` otherwise."""
    check_compat(compat)
    if compat is not None and method != "gradeclip":
        raise InputError(f"compat={compat!r} reproduces the authors' Grad-ECLIP evaluation; method {method!r} runs without it")
    form = resolve(compat, "eval", {"resolution": resolution, "pixel_order": pixel_order})
    shape = resolve(compat, "geometry", {"max_short_side": max_short_side})
    image = dict(options or {}) if compat is None else resolve(compat, "image", dict(options or {}))
    return EvalForm(image, form["resolution"], shape["max_short_side"], shape["geometry"], form["pixel_order"])
