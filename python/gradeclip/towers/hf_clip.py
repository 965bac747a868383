"""Hugging Face ``transformers`` ``CLIPModel``: the vision and the text tower.

Vision: :class:`~gradeclip.towers.hf_vision.HFViTVision` after ``pre_layrnorm``, projected by
``visual_projection``.

Text (SPEC §1, text row): causal, pooled at the end-of-text token the way the model finds it
(``argmax`` of the ids when ``eos_token_id == 2``, the first ``eos_token_id`` otherwise); then
``final_layer_norm`` and ``text_projection``. Token ids ``[T, L]`` come from the model's tokenizer
(``CLIPTokenizer``); padding after the end-of-text token changes nothing, the mask being causal.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import InputError
from .base import TextTower, TokenBatch
from .hf_blocks import PreNormBlock, causal_mask
from .hf_vision import HFViTVision


def check_token_ids(tokens: Tensor, context_length: int, vocab: int) -> None:
    """Raise :class:`InputError` unless ``tokens`` is an integer ``[T, L]`` tensor with T ≥ 1,
    1 ≤ L ≤ ``context_length`` and every id in ``0..vocab-1``."""
    if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.is_floating_point() or tokens.dtype == torch.bool:
        raise InputError(f"token ids must be an integer tensor [T, L], got {getattr(tokens, 'dtype', type(tokens).__name__)}")
    count, length = tokens.shape
    if count == 0 or not 1 <= length <= context_length:
        raise InputError(f"token ids must be [T, L] with T ≥ 1 and 1 ≤ L ≤ {context_length}, got {tuple(tokens.shape)}")
    if tokens.min() < 0 or tokens.max() >= vocab:
        raise InputError(f"token ids must lie in 0..{vocab - 1} (the vocabulary)")


class HFClipVision(HFViTVision):
    """Adapter for ``CLIPModel.vision_model`` (after its ``pre_layrnorm``) + ``visual_projection``."""

    def __init__(self, model: nn.Module):
        super().__init__("CLIPModel", model, model.vision_model, model.visual_projection, model.vision_model.pre_layrnorm)


class HFClipText(TextTower):
    """Adapter for ``CLIPModel.text_model`` + ``text_projection``."""

    def __init__(self, model: nn.Module):
        tm = model.text_model
        layers = list(tm.encoder.layers)
        cfg = tm.config
        self.description = f"transformers CLIPModel text tower (width {cfg.hidden_size}, {len(layers)} layers)"
        self.model = model
        self.text = tm
        self.blocks = [PreNormBlock(layer, f"{self.description}, layer {i}") for i, layer in enumerate(layers)]
        self.embed_dim = model.text_projection.out_features
        self.context_length = cfg.max_position_embeddings
        self.eos_id = tm.eos_token_id

    def eot_positions(self, tokens: Tensor) -> Tensor:
        """The pooled (end-of-text) position of each row of ids ``[T, L]``, as the model finds it: ``[T]`` long."""
        check_token_ids(tokens, self.context_length, self.text.config.vocab_size)
        if self.eos_id == 2:  # the model's legacy rule: the largest id is the end-of-text token
            return tokens.argmax(dim=-1)
        is_eos = tokens == self.eos_id
        missing = (~is_eos.any(dim=-1)).nonzero().flatten().tolist()
        if missing:
            raise InputError(f"text rows {missing} have no end-of-text token (id {self.eos_id}), which the model pools")
        return is_eos.int().argmax(dim=-1)

    def reported(self, tokens: Tensor) -> Tensor:
        eot = self.eot_positions(tokens)
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        return (positions > 0) & (positions < eot.unsqueeze(1))

    def embed(self, tokens: Tensor, whole_context: bool = False) -> TokenBatch:
        tokens = tokens.to(self.device)
        eot = self.eot_positions(tokens)
        # causal: positions after the last EOT change nothing that is pooled (whole_context: run them all)
        n = tokens.shape[1] if whole_context else int(eot.max()) + 1
        x = self.text.embeddings(input_ids=tokens[:, :n])
        positions = torch.arange(n, device=x.device)
        return TokenBatch(x, causal_mask(n, x.dtype, x.device), eot, positions, positions <= eot.unsqueeze(1), (n,))

    def head(self, z: Tensor) -> Tensor:
        return self.model.text_projection(self.text.final_layer_norm(z))

