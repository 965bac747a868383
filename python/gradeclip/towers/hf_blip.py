"""Hugging Face ``transformers`` ``BlipForImageTextRetrieval``: its image–text contrastive head
(``use_itm_head=False``, paper §4.1.4), both towers.

Vision: :class:`~gradeclip.towers.hf_vision.HFViTVision` (no pre-norm), projected by ``vision_proj``.

Text: BLIP's BERT encoder (bidirectional, post-norm) pooled at its first token (``[CLS]``), then
``text_proj``. The explained attention is each of the last ``n_layers`` blocks at position 0 over
the non-padding tokens (``ids != pad_token_id``, which is also the attention mask the model gets);
importance is reported for the tokens strictly between ``[CLS]`` and the last non-padding token
(``[SEP]``). Token ids ``[T, L]`` come from BLIP's ``BertTokenizer``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import TextTower, TokenBatch
from .hf_blocks import PostNormBertBlock, key_padding_mask
from .hf_clip import check_token_ids
from .hf_vision import HFViTVision


class BlipVision(HFViTVision):
    """Adapter for ``BlipForImageTextRetrieval.vision_model`` + ``vision_proj``."""

    def __init__(self, model: nn.Module):
        super().__init__("BLIP", model, model.vision_model, model.vision_proj, None)


class BlipText(TextTower):
    """Adapter for ``BlipForImageTextRetrieval.text_encoder`` (no cross-attention) + ``text_proj``."""

    def __init__(self, model: nn.Module):
        te = model.text_encoder
        layers = list(te.encoder.layer)
        cfg = te.config
        self.description = f"transformers BLIP text encoder (width {cfg.hidden_size}, {len(layers)} layers)"
        self.model = model
        self.text = te
        self.blocks = [PostNormBertBlock(layer, f"{self.description}, layer {i}") for i, layer in enumerate(layers)]
        self.embed_dim = model.text_proj.out_features
        self.context_length = cfg.max_position_embeddings
        self.pad_id = cfg.pad_token_id

    def valid(self, tokens: Tensor) -> Tensor:
        """``[T, L]`` bool: the non-padding tokens (the attention mask BLIP's processor makes)."""
        check_token_ids(tokens, self.context_length, self.text.config.vocab_size)
        return tokens != self.pad_id

    def reported(self, tokens: Tensor) -> Tensor:
        valid = self.valid(tokens)
        last = valid.sum(dim=-1, keepdim=True) - 1  # [SEP]
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        return valid & (positions > 0) & (positions < last)

    def embed(self, tokens: Tensor, whole_context: bool = False) -> TokenBatch:
        tokens = tokens.to(self.device)  # bidirectional: every position always runs (whole_context changes nothing)
        valid = self.valid(tokens)
        x = self.text.embeddings(input_ids=tokens)
        query = torch.zeros(tokens.shape[0], dtype=torch.long, device=x.device)
        positions = torch.arange(tokens.shape[1], device=x.device)
        return TokenBatch(x, key_padding_mask(valid, x.dtype), query, positions, valid, (tokens.shape[1],))

    def head(self, z: Tensor) -> Tensor:
        return self.model.text_proj(z)
