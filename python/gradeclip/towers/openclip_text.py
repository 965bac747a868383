"""open_clip's causal text transformers: the text modules of ``CLIP`` and ``CustomTextCLIP.text``.

Explained attention (SPEC §1, §3): each of the last ``n_layers`` blocks, query = the pooled
end-of-text position (EOT), keys = tokens 0..EOT. The causal mask means no position up to EOT ever
sees a later one, so a batch is run only up to its longest EOT: the result at every position that
matters is the same as for the full context, at a fraction of the cost.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import InputError, UnsupportedModelError
from .base import TokenBatch, TokenTower
from .blocks import BlockAdapter

#: pooling types whose pooled position is the end-of-text token (SPEC §1, text row)
POOLS = ("argmax", "eos")


def _refuse_pool(description: str, pool_type: str) -> UnsupportedModelError:
    reasons = {
        "first": "pools the first (start-of-text) token, which under the causal mask never sees the caption",
        "last": "pools the last context position (a padding token), not the end-of-text token",
        "none": "returns every token instead of one pooled embedding",
    }
    why = reasons.get(pool_type, "is not a pooling gradeclip knows")
    return UnsupportedModelError(
        f"{description}: text pool_type={pool_type!r} {why}; Grad-ECLIP explains the end-of-text "
        f"position (supported pool types: {', '.join(POOLS)})"
    )


class OpenClipText(TokenTower):
    """Adapter for a causal open_clip text transformer pooled at its end-of-text token.

    Build it with :meth:`from_clip` (text modules directly on an open_clip ``CLIP``) or
    :meth:`from_text_transformer` (``CustomTextCLIP.text``, a ``TextTransformer``).
    """

    def __init__(
        self,
        *,
        owner: str,
        token_embedding: nn.Embedding,
        positional_embedding: Tensor,
        transformer: nn.Module,
        ln_final: nn.Module,
        text_projection: Tensor | nn.Linear | None,
        attn_mask: Tensor | None,
        pool_type: str,
        eos_id: int | None,
    ):
        blocks = list(transformer.resblocks)
        self.description = f"{owner} text transformer (width {transformer.width}, {len(blocks)} blocks)"
        if pool_type not in POOLS:
            raise _refuse_pool(self.description, pool_type)
        if pool_type == "eos" and eos_id is None:
            raise UnsupportedModelError(f"{self.description}: pool_type='eos' but the model names no eos token id")
        if attn_mask is None or not _is_causal(attn_mask):
            raise UnsupportedModelError(
                f"{self.description}: the text tower is not causal (no causal attention mask); SPEC §1 covers "
                "causal text transformers, where the end-of-text token sees exactly tokens 0..EOT"
            )
        self.blocks = [BlockAdapter(b, f"{self.description}, block {i}") for i, b in enumerate(blocks)]
        self.token_embedding = token_embedding
        self.positional_embedding = positional_embedding
        self.transformer = transformer
        self.ln_final = ln_final
        self.text_projection = text_projection
        self.attn_mask = attn_mask
        self.pool_type = pool_type
        self.eos_id = eos_id
        self.batch_first = getattr(transformer, "batch_first", True)
        self.context_length: int = positional_embedding.shape[0]
        if text_projection is None:
            self.embed_dim: int = transformer.width
        elif isinstance(text_projection, nn.Linear):
            self.embed_dim = text_projection.out_features
        else:
            self.embed_dim = text_projection.shape[1]

    @classmethod
    def from_clip(cls, model: nn.Module) -> OpenClipText:
        """The text side of an open_clip ``CLIP`` (its text modules live on the model itself)."""
        return cls(
            owner=type(model).__name__,
            token_embedding=model.token_embedding,
            positional_embedding=model.positional_embedding,
            transformer=model.transformer,
            ln_final=model.ln_final,
            text_projection=model.text_projection,
            attn_mask=model.attn_mask,
            pool_type=getattr(model, "text_pool_type", "argmax"),  # older open_clip: always argmax
            eos_id=getattr(model, "text_eos_id", None),
        )

    @classmethod
    def from_text_transformer(cls, text: nn.Module, owner: str) -> OpenClipText:
        """An open_clip ``TextTransformer`` (``CustomTextCLIP.text``); ``owner`` names the model in messages."""
        if getattr(text, "cls_emb", None) is not None:
            raise UnsupportedModelError(
                f"{owner}: the text tower appends a learned class token (embed_cls, CoCa style) and pools it; "
                "gradeclip explains towers pooled at the end-of-text token"
            )
        return cls(
            owner=owner,
            token_embedding=text.token_embedding,
            positional_embedding=text.positional_embedding,
            transformer=text.transformer,
            ln_final=text.ln_final,
            text_projection=text.text_projection,
            attn_mask=text.attn_mask,
            pool_type=text.pool_type,
            eos_id=getattr(text, "eos_id", None),
        )

    def eot_positions(self, tokens: Tensor) -> Tensor:
        """The pooled (end-of-text) position of each row of token ids ``[T, L]``, as the model pools: ``[T]`` long.

        Raises :class:`InputError` for ids that are not a ``[T, L]`` integer tensor within the
        vocabulary and context length, or (pool type ``"eos"``) a row without the eos token.
        """
        if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.is_floating_point() or tokens.dtype == torch.bool:
            raise InputError(f"token ids must be an integer tensor [T, L], got {getattr(tokens, 'dtype', type(tokens).__name__)}")
        count, length = tokens.shape
        if count == 0 or not 1 <= length <= self.context_length:
            raise InputError(f"token ids must be [T, L] with T ≥ 1 and 1 ≤ L ≤ {self.context_length}, got {tuple(tokens.shape)}")
        vocab = self.token_embedding.num_embeddings
        if tokens.min() < 0 or tokens.max() >= vocab:
            raise InputError(f"token ids must lie in 0..{vocab - 1} (the vocabulary)")
        if self.pool_type == "argmax":
            return tokens.argmax(dim=-1)
        is_eos = tokens == self.eos_id
        missing = (~is_eos.any(dim=-1)).nonzero().flatten().tolist()
        if missing:
            raise InputError(f"text rows {missing} have no end-of-text token (id {self.eos_id}), which the model pools")
        return is_eos.int().argmax(dim=-1)

    def embed(self, tokens: Tensor) -> TokenBatch:
        tokens = tokens.to(self.device)
        eot = self.eot_positions(tokens)
        n = int(eot.max()) + 1  # the causal mask: positions after the last EOT change nothing that is pooled
        dtype = self.transformer.get_cast_dtype()
        x = self.token_embedding(tokens[:, :n]).to(dtype) + self.positional_embedding[:n].to(dtype)
        positions = torch.arange(n, device=x.device)
        return TokenBatch(
            x=x,
            attn_mask=self.attn_mask[:n, :n],
            query=eot,
            keys=positions,
            key_mask=positions.unsqueeze(0) <= eot.unsqueeze(1),
            grid=(n,),
        )

    def head(self, z: Tensor) -> Tensor:
        z = self.ln_final(z)
        if self.text_projection is None:
            return z
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(z)
        return z @ self.text_projection


def _is_causal(mask: Tensor) -> bool:
    """Whether an additive ``[L, L]`` mask hides exactly the positions after each query."""
    if mask.ndim != 2 or mask.shape[0] != mask.shape[1]:
        return False
    hidden = torch.ones(mask.shape, dtype=torch.bool, device=mask.device).triu(1)
    return bool(torch.equal(torch.isneginf(mask), hidden) and (mask[~hidden] == 0).all())

