"""Hugging Face ``transformers`` ``SiglipModel``: the vision and the text tower (the sigmoid model's
cosine is the explained score; ``logit_scale`` and ``logit_bias`` do not change it).

Vision: the encoder and ``post_layernorm`` run as the model's own; explained is the pooling head's
attention (``SiglipMultiheadAttentionPoolingHead``, an ``nn.MultiheadAttention`` with packed
``in_proj_weight``) from its learned ``probe`` query to the patch tokens; then ``out_proj`` and
``z + mlp(layernorm(z))`` (SPEC §1, attention-pool row). Other input sizes use the model's own
position interpolation.

Text: bidirectional (no mask: the model pads to ``max_length`` and attends to the padding too),
pooled at the last position, then ``final_layer_norm`` and ``head``. Importance is reported for the
tokens before the first end-of-text token (SigLIP adds no start token).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import UnsupportedModelError
from .base import ImageTower, TextTower, TokenBatch
from .blocks import ExplainedAttention, QueryQKV
from .hf_blocks import PreNormBlock
from .hf_clip import check_token_ids
from .hf_vision import vit_geometry


class SiglipPoolingHeadAdapter(ExplainedAttention):
    """``SiglipMultiheadAttentionPoolingHead``: the probe's attention to the tokens, then the head's rest."""

    def __init__(self, head: nn.Module, where: str):
        attn = getattr(head, "attention", None)
        if not isinstance(attn, nn.MultiheadAttention) or attn.in_proj_weight is None or not attn.batch_first:
            raise UnsupportedModelError(f"{where}: the pooling head's attention is not a batch-first nn.MultiheadAttention with packed q/k/v")
        self.head = self.module = head
        self.attn = attn
        self.heads = attn.num_heads

    def query_qkv(self, x: Tensor, query: Tensor | None, attn_mask: Tensor | None) -> QueryQKV:
        a = self.attn
        w_q, w_k, w_v = a.in_proj_weight.chunk(3)
        b_q, b_k, b_v = a.in_proj_bias.chunk(3) if a.in_proj_bias is not None else (None, None, None)
        q = F.linear(self.head.probe, w_q, b_q).expand(x.shape[0], -1, -1)  # [B, 1, D]
        return QueryQKV(q, F.linear(x, w_k, b_k), F.linear(x, w_v, b_v), None)

    def out_proj(self, o: Tensor) -> Tensor:
        return self.attn.out_proj(o)

    def pooled(self, o: Tensor) -> Tensor:
        """The head's output ``[B, D]`` from the attention output at the probe ``[B, 1, D]``."""
        z = self.attn.out_proj(o)
        return (z + self.head.mlp(self.head.layernorm(z)))[:, 0]


class SiglipVision(ImageTower):
    """Adapter for ``SiglipModel.vision_model`` (encoder run as the model's, pooling head explained)."""

    def __init__(self, model: nn.Module):
        vision = model.vision_model
        cfg = vision.config
        if not getattr(vision, "use_head", False):
            raise UnsupportedModelError("transformers SiglipModel vision tower has no pooling head (vision_use_head=False): nothing pools to the embedding")
        self.description = (
            f"transformers SiglipModel vision tower (width {cfg.hidden_size}, {len(vision.encoder.layers)} layers, patch {cfg.patch_size})"
        )
        self.model = model
        self.vision = vision
        self.pooler = SiglipPoolingHeadAdapter(vision.head, self.description)
        self.blocks = [self.pooler]
        self.embed_dim = cfg.hidden_size
        self.patch_size, self.model_grid = vit_geometry(cfg)

    def embed(self, images: Tensor) -> TokenBatch:
        self.check_images(images)
        images = images.to(device=self.device, dtype=self.dtype)
        grid = (images.shape[-2] // self.patch_size[0], images.shape[-1] // self.patch_size[1])
        v = self.vision
        x = v.embeddings(images, interpolate_pos_encoding=grid != self.model_grid)
        x = v.post_layernorm(v.encoder(inputs_embeds=x).last_hidden_state)
        return TokenBatch(x, None, None, torch.arange(x.shape[1], device=x.device), None, grid)

    def readout(self, x: Tensor, o: Tensor, batch: TokenBatch) -> Tensor:
        return self.pooler.pooled(o)


class SiglipText(TextTower):
    """Adapter for ``SiglipModel.text_model`` (its ``head`` is the projection)."""

    def __init__(self, model: nn.Module):
        tm = model.text_model
        layers = list(tm.encoder.layers)
        cfg = tm.config
        self.description = f"transformers SiglipModel text tower (width {cfg.hidden_size}, {len(layers)} layers)"
        self.model = model
        self.text = tm
        self.blocks = [PreNormBlock(layer, f"{self.description}, layer {i}") for i, layer in enumerate(layers)]
        self.embed_dim = tm.head.out_features
        self.context_length = cfg.max_position_embeddings
        self.eos_id = cfg.eos_token_id

    def reported(self, tokens: Tensor) -> Tensor:
        check_token_ids(tokens, self.context_length, self.text.config.vocab_size)
        is_eos = tokens == self.eos_id
        first = torch.where(is_eos.any(dim=-1), is_eos.int().argmax(dim=-1), tokens.shape[1])
        return torch.arange(tokens.shape[1], device=tokens.device) < first.unsqueeze(1)

    def embed(self, tokens: Tensor, whole_context: bool = False) -> TokenBatch:
        tokens = tokens.to(self.device)  # bidirectional: every position always runs (whole_context changes nothing)
        check_token_ids(tokens, self.context_length, self.text.config.vocab_size)
        x = self.text.embeddings(input_ids=tokens)
        length = tokens.shape[1]
        query = torch.full((tokens.shape[0],), length - 1, dtype=torch.long, device=x.device)
        return TokenBatch(x, None, query, torch.arange(length, device=x.device), None, (length,))

    def head(self, z: Tensor) -> Tensor:
        return self.text.head(self.text.final_layer_norm(z))
