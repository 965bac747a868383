"""Tiny random-weight models of every family beyond open_clip's ViT, built from configs (no downloads)."""

from __future__ import annotations

from unittest import mock

import torch
from torch import nn


def spread(model: nn.Module, scale: float = 0.05) -> nn.Module:
    """Perturb biases, norms, layer scales, class tokens and learned queries (libraries start many
    at 0 or 1) so that a test can tell them apart; returns the model in eval mode."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            low = name.lower()
            if any(key in low for key in ("bias", "norm", "ln", "gamma", "ls", "latent", "query", "cls", "class", "pos")):
                p.add_(scale * torch.randn_like(p))
    return model.eval()


def tiny_resnet_clip(image_size: int = 96):
    """open_clip ``CLIP`` with a ModifiedResNet (1 bottleneck per stage, feature width 256, 4 heads)."""
    from conftest import tiny_clip

    return spread(tiny_clip(layers=(1, 1, 1, 1), width=8, head_width=64, image_size=image_size))


def tiny_coca_vit(pool_type: str = "tok", queries: int = 5):
    """open_clip ``CLIP`` whose ViT pools with CoCa's attentional pooler (``queries`` learned queries)."""
    from conftest import tiny_clip

    return spread(tiny_clip(attentional_pool=True, attn_pooler_queries=queries, attn_pooler_heads=4, pool_type=pool_type))


def _small_timm(**overrides):
    import timm

    real = timm.create_model

    def create(name, *args, **kwargs):
        kwargs.update(overrides)
        return real(name, *args, **kwargs)

    return mock.patch("timm.create_model", create)


def tiny_siglip(latents: int = 1, pool: str = "token"):
    """open_clip ``CustomTextCLIP`` built from ViT-B-16-SigLIP's config shape: timm trunk with the
    "map" head (``latents`` latent queries, ``pool``), bidirectional text tower pooled at its last position."""
    import open_clip

    with _small_timm(depth=2, embed_dim=64, num_heads=4, img_size=32, patch_size=8):
        model = open_clip.CustomTextCLIP(
            embed_dim=64,
            vision_cfg=dict(timm_model_name="vit_base_patch16_siglip_224", timm_pool="map", timm_proj="none", image_size=32),
            text_cfg=dict(
                context_length=16, vocab_size=1000, width=64, heads=4, layers=3, mlp_ratio=2.0,
                no_causal_mask=True, proj_bias=True, pool_type="last", pad_id=1,
            ),
        )
    if latents != 1 or pool != "token":  # a map head with several latent queries
        from timm.layers import AttentionPoolLatent

        head = AttentionPoolLatent(64, num_heads=4, latent_len=latents, pool_type=pool, norm_layer=nn.LayerNorm)
        head.latent.data.normal_(std=64**-0.5)
        model.visual.trunk.attn_pool = head
    return spread(model)


def tiny_eva02():
    """open_clip ``CustomTextCLIP`` built from EVA02-B-16's config: timm EVA02 trunk (rotary position
    embedding, SwiGLU, inner attention norm, separate q/k/v), 2 blocks, 32 px."""
    import open_clip

    with _small_timm(depth=3, embed_dim=64, num_heads=4, img_size=32, patch_size=8, ref_feat_shape=(4, 4)):
        model = open_clip.CustomTextCLIP(
            embed_dim=48,
            vision_cfg=dict(timm_model_name="eva02_base_patch16_clip_224", timm_pool="token", timm_proj=None, image_size=32),
            text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=4, layers=3, mlp_ratio=2.0),
        )
    return spread(model)


def tiny_timm_classifier(name: str = "vit_tiny_patch16_224", **overrides):
    """A timm image classifier (class-token ViT, 10 classes, 32 px)."""
    import timm

    kwargs = dict(depth=3, embed_dim=64, num_heads=4, img_size=32, patch_size=8, num_classes=10)
    kwargs.update(overrides)
    return spread(timm.create_model(name, pretrained=False, **kwargs))


def tiny_hf_clip():
    """transformers ``CLIPModel``: 3-layer towers of width 64, 32 px images, 16-token texts, eos id 999."""
    from transformers import CLIPConfig, CLIPModel

    text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4, vocab_size=1000,
                max_position_embeddings=16, eos_token_id=999, bos_token_id=998, pad_token_id=0)
    vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4, image_size=32, patch_size=8)
    return spread(CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)))


def tiny_blip():
    """transformers ``BlipForImageTextRetrieval``: 3-layer towers of width 64, 32 px, 16-token texts."""
    from transformers import BlipConfig, BlipForImageTextRetrieval

    text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4, vocab_size=1000,
                max_position_embeddings=16, encoder_hidden_size=64, bos_token_id=998, sep_token_id=102, pad_token_id=0)
    vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4, image_size=32, patch_size=8)
    return spread(BlipForImageTextRetrieval(BlipConfig(text_config=text, vision_config=vision, image_text_hidden_size=32)))


def tiny_hf_siglip():
    """transformers ``SiglipModel``: 3-layer towers of width 64, 32 px images, 16-token texts, eos id 999."""
    from transformers import SiglipConfig, SiglipModel

    text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4, vocab_size=1000,
                max_position_embeddings=16, eos_token_id=999, bos_token_id=998, pad_token_id=1, projection_size=64)
    vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4, image_size=32, patch_size=8)
    return spread(SiglipModel(SiglipConfig(text_config=text, vision_config=vision)))


def hf_ids(sot: int, eot: int, ends=(5, 9, 15), length: int = 16, vocab: int = 990) -> torch.Tensor:
    """Token ids ``[len(ends), length]``: ``sot``, random content, ``eot`` at each end, zeros after."""
    ids = torch.randint(103, vocab, (len(ends), length))
    ids[:, 0] = sot
    for row, end in enumerate(ends):
        ids[row, end] = eot
        ids[row, end + 1 :] = 0
    return ids


def tiny_coca(**text_overrides):
    """open_clip ``CoCa`` shaped like coca_ViT-B-32 but small: text tower of 8 blocks (width 64, 4 heads,
    context 76, an appended class token, open_clip's legacy class-token mask), 2-block ViT with the
    attentional pooler, 1-layer multimodal decoder. Token/position embeddings and the class token are
    scaled up as in ``conftest.tiny_text_clip`` so that tokens differ deep in the tower."""
    import open_clip

    text = dict(context_length=76, vocab_size=49408, width=64, heads=4, layers=8, mlp_ratio=2.0, embed_cls=True, output_tokens=True)
    text.update(text_overrides)
    model = open_clip.CoCa(
        embed_dim=32,
        multimodal_cfg=dict(width=64, heads=4, layers=1, context_length=76),
        text_cfg=text,
        vision_cfg=dict(image_size=32, patch_size=8, width=64, layers=2, head_width=16, mlp_ratio=2.0,
                        attentional_pool=True, attn_pooler_queries=5, attn_pooler_heads=4, output_tokens=True),
    )
    with torch.no_grad():
        for name, p in model.text.named_parameters():
            if "bias" in name or "ls_" in name or "ln" in name:
                p.add_(0.05 * torch.randn_like(p))
            if name in ("token_embedding.weight", "positional_embedding", "cls_emb"):
                p.mul_(50.0)
    return model.eval()


def tiny_synth_weights(path):
    """A random gradeclip-synth-architecture model far smaller than the shipped one (32 px, conv stem,
    2 vision blocks and 1 text block of width 32, the synth world's tokenizer), written with
    ``save_weights`` to ``path``: pass it as ``pretrained`` of ``gradeclip-synth``. Returns ``path``."""
    from gradeclip.synth.model import build_model, save_weights

    config = {
        "embed_dim": 32,
        "vision_stem": "conv",
        "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 2, "head_width": 16, "mlp_ratio": 2.0},
        "text_cfg": {"context_length": 48, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1, "mlp_ratio": 2.0},
        "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
    }
    torch.manual_seed(11)
    save_weights(spread(build_model(config)), config, path, {"tiny": True})
    return path
