"""Fine-grained fine-tuning of CLIP with Grad-ECLIP maps (SPEC §10, paper §6).

``finetune(model_name, source, out, FinetuneConfig(...))`` trains on image–caption pairs from any
:mod:`gradeclip.data` source; ``gradeclip finetune`` is the command line. The parts: phrase
extraction (:mod:`.phrases`), the image forward with dense features and the phrase maps
(:mod:`.dense`), the losses (:mod:`.losses`), the loop (:mod:`.trainer`).
"""

from __future__ import annotations

from .dense import MAP_METHODS, dense_features, image_forward, map_weights, phrase_maps, region_embeddings
from .losses import global_loss, local_loss
from .phrases import EXTRACTORS, extractor
from .trainer import FinetuneConfig, finetune

__all__ = [
    "EXTRACTORS",
    "MAP_METHODS",
    "FinetuneConfig",
    "dense_features",
    "extractor",
    "finetune",
    "global_loss",
    "image_forward",
    "local_loss",
    "map_weights",
    "phrase_maps",
    "region_embeddings",
]
