"""open_clip's text transformers: the text modules of ``CLIP`` and ``CustomTextCLIP.text`` / ``CoCa.text``.

Explained attention (SPEC §1, §3): each of the last ``n_layers`` blocks at the pooled position. Four
kinds of tower, one rule for the keys: **λ's min-max runs over exactly the positions the query
attends to** (its row of the model's attention mask), and importance is reported for the caption's
own tokens.

- *Causal, pooled at the end-of-text token (EOT)* — OpenAI / open_clip CLIP. Query = EOT, keys =
  tokens 0..EOT. The causal mask means no position up to EOT ever sees a later one, so a batch is
  run only up to its longest EOT: the result at every position that matters is the same as for the
  full context, at a fraction of the cost.
- *Bidirectional, pooled at EOT* (``no_causal_mask=True``, MobileCLIP-S*/MobileCLIP2-S*). Query =
  EOT. open_clip builds these towers without a padding mask, so EOT attends to every position of
  the ids, the padding after it included: all of them are keys (with ``use_pad_mask=True``, the
  non-padding ones). The whole sequence runs, as the model runs it.
- *Bidirectional, pooled at the last position* (SigLIP). Query = the last position; keys = all
  positions; importance is reported for the positions that are not padding (``ids != pad_id``).
- *With an appended class token* (``embed_cls=True``, CoCa). A learned token is appended after the
  ids and pooled (``ln_final`` after pooling, which is the same per-token operation). Its attention
  is the causal mask plus a padding mask built per row, as open_clip's
  ``TextTransformer._build_additive_mask``: with ``correct_cls_mask=False`` (every open_clip CoCa
  config) the padding mask is shifted one place to the right, so the class token sees tokens
  0..EOT+1 (the first padding position included) and not itself unless the ids fill the context;
  with ``correct_cls_mask=True`` it sees 0..EOT and itself. Those are the keys. The class token is
  not a word: it takes part in λ's min-max only when the model lets the query attend to it, and it
  is never reported. Query = the class token; importance is reported strictly between SOT and EOT,
  EOT being found as ``pool_type`` says (``"argmax"`` unless ``"eos"``; the model itself ignores
  ``pool_type`` once it has a class token).

Towers with a per-row mask (padding mask or class token) hand the engine an additive mask
``[B, L, L]``; the model's own blocks get it repeated per head, ``[B·heads, L, L]``, as
``nn.MultiheadAttention`` wants it (:meth:`~gradeclip.towers.blocks.BlockAdapter.forward`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import InputError, UnsupportedModelError
from .base import TextTower, TokenBatch
from .blocks import BlockAdapter, mask_rows

#: pooling types whose pooled position is the end-of-text token (SPEC §1, text row)
POOLS = ("argmax", "eos")


def _refuse_pool(description: str, pool_type: str, causal: bool) -> UnsupportedModelError:
    reasons = {
        "first": "pools the first (start-of-text) token, which under the causal mask never sees the caption"
        if causal
        else "pools the first (start-of-text) token, which gradeclip does not explain",
        "last": "pools the last context position (a padding token), not the end-of-text token",
        "none": "returns every token instead of one pooled embedding",
    }
    why = reasons.get(pool_type, "is not a pooling gradeclip knows")
    supported = ", ".join(POOLS) + ("" if causal else ", last")
    return UnsupportedModelError(
        f"{description}: text pool_type={pool_type!r} {why}; Grad-ECLIP explains the pooled position "
        f"(supported pool types: {supported}; or an appended class token, CoCa)"
    )


class OpenClipText(TextTower):
    """Adapter for an open_clip text transformer (the four kinds of the module docstring).

    Build it with :meth:`from_clip` (text modules directly on an open_clip ``CLIP``) or
    :meth:`from_text_transformer` (a ``TextTransformer``: ``CustomTextCLIP.text``, ``CoCa.text``).
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
        pad_id: int = 0,
        cls_emb: Tensor | None = None,
        pad_mask: bool = False,
        correct_cls_mask: bool = False,
    ):
        blocks = list(transformer.resblocks)
        self.description = f"{owner} text transformer (width {transformer.width}, {len(blocks)} blocks)"
        causal = attn_mask is not None
        if causal and not _is_causal(attn_mask):
            raise UnsupportedModelError(
                f"{self.description}: the text tower's attention mask is neither causal nor absent; gradeclip explains "
                "causal and bidirectional text transformers"
            )
        #: the pooled position is the last one (SigLIP: bidirectional, pool_type "last", no class token)
        self.pools_last = not causal and cls_emb is None and pool_type == "last"
        if cls_emb is not None:
            pool_type = "eos" if pool_type == "eos" else "argmax"  # only locates EOT: the class token is pooled
        elif pool_type not in POOLS and not self.pools_last:
            raise _refuse_pool(self.description, pool_type, causal)
        if pool_type == "eos" and eos_id is None:
            raise UnsupportedModelError(f"{self.description}: pool_type='eos' but the model names no eos token id")
        self.blocks = [BlockAdapter(b, f"{self.description}, block {i}") for i, b in enumerate(blocks)]
        self.token_embedding = token_embedding
        self.positional_embedding = positional_embedding
        self.transformer = transformer
        self.ln_final = ln_final
        self.text_projection = text_projection
        self.attn_mask = attn_mask
        self.pool_type = pool_type
        self.eos_id = eos_id
        self.pad_id = pad_id
        self.cls_emb = cls_emb
        #: a per-row padding mask joins the attention mask (open_clip: class-token towers, or ``use_pad_mask``)
        self.pad_mask = pad_mask or cls_emb is not None
        self.correct_cls_mask = correct_cls_mask
        #: causal, no per-row mask: a batch runs only up to its longest EOT
        self.truncates = causal and not self.pad_mask
        self.batch_first = getattr(transformer, "batch_first", True)
        self.context_length: int = positional_embedding.shape[0] - (cls_emb is not None)
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
        """An open_clip ``TextTransformer`` (``CustomTextCLIP.text``, ``CoCa.text``); ``owner`` names the model in messages."""
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
            pad_id=getattr(text, "pad_id", 0),
            cls_emb=getattr(text, "cls_emb", None),
            pad_mask=getattr(text, "use_pad_mask", False),
            correct_cls_mask=getattr(text, "correct_cls_mask", False),
        )

    def eot_positions(self, tokens: Tensor) -> Tensor:
        """The end-of-text position of each row of token ids ``[T, L]`` (for a tower pooled at its last
        position: that position): ``[T]`` long.

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
        if self.pools_last:
            return torch.full((count,), length - 1, dtype=torch.long, device=tokens.device)
        if self.pool_type == "argmax":
            return tokens.argmax(dim=-1)
        is_eos = tokens == self.eos_id
        missing = (~is_eos.any(dim=-1)).nonzero().flatten().tolist()
        if missing:
            raise InputError(f"text rows {missing} have no end-of-text token (id {self.eos_id}), which marks the caption's end")
        return is_eos.int().argmax(dim=-1)

    def reported(self, tokens: Tensor) -> Tensor:
        eot = self.eot_positions(tokens)
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        if self.pools_last:
            return tokens != self.pad_id
        return (positions > 0) & (positions < eot.unsqueeze(1))

    def embed(self, tokens: Tensor, whole_context: bool = False) -> TokenBatch:
        """The tokens entering block 0 ``[T, L', D]`` with the attention mask, the query (EOT, the last
        position, or the appended class token at ``L``) and every position as a key, valid where the
        query attends to it. ``L'`` = the longest EOT + 1 for a causal tower without a per-row mask
        (unless ``whole_context``: then every position of the ids runs, as the authors' released
        code runs them), ``L + 1`` with a class token, else ``L``; map column ``j < L`` is token
        position ``j``."""
        tokens = tokens.to(self.device)
        eot = self.eot_positions(tokens)
        if self.pools_last and tokens.shape[1] != self.context_length:
            raise InputError(
                f"{self.description} pools its last context position: token ids must be padded to "
                f"{self.context_length}, got length {tokens.shape[1]}"
            )
        if self.truncates and not whole_context:  # the causal mask: positions after the last EOT change nothing that is pooled
            tokens = tokens[:, : int(eot.max()) + 1]
        dtype = self.transformer.get_cast_dtype()
        x = self.token_embedding(tokens).to(dtype)
        if self.cls_emb is not None:
            x = torch.cat([x, self.cls_emb.to(dtype).expand(x.shape[0], 1, -1)], dim=1)
        length = x.shape[1]
        x = x + self.positional_embedding[:length].to(dtype)
        mask = self.attention_mask(tokens, length, dtype)
        query = eot if self.cls_emb is None else torch.full_like(eot, length - 1)
        key_mask = None if mask is None else torch.isfinite(mask_rows(mask, query)[:, 0])
        positions = torch.arange(length, device=x.device)
        return TokenBatch(x=x, attn_mask=mask, query=query, keys=positions, key_mask=key_mask, grid=(length,))

    def attention_mask(self, tokens: Tensor, length: int, dtype: torch.dtype) -> Tensor | None:
        """The model's additive attention mask for ids ``[T, L]`` run as ``length`` positions: ``[length,
        length]`` (causal), ``[T, length, length]`` (with a padding mask, per row) or None.

        The padding mask hides the keys ``ids == pad_id`` from every query; with a class token it
        is open_clip's: the class token's key is always valid and, unless ``correct_cls_mask``, the
        validity row is shifted right by one (``[True, ids != pad_id]``, the model's legacy mask).
        """
        mask = None if self.attn_mask is None else self.attn_mask[:length, :length].to(dtype)
        if not self.pad_mask:
            return mask
        valid = tokens != self.pad_id
        if self.cls_emb is not None:
            always = valid.new_ones(valid.shape[0], 1)
            valid = torch.cat([valid, always] if self.correct_cls_mask else [always, valid], dim=1)
        hidden = torch.zeros(valid.shape, dtype=dtype, device=tokens.device).masked_fill(~valid, float("-inf"))
        rows = hidden.unsqueeze(1).expand(-1, length, -1)  # [T, length, length]: every query hides the same keys
        return rows.contiguous() if mask is None else mask + rows

    def head(self, z: Tensor) -> Tensor:
        z = self.ln_final(z)
        if self.text_projection is None:
            return z
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(z)
        return z @ self.text_projection


def _is_causal(mask: Tensor) -> bool:
    """Whether an additive ``[L, L]`` mask hides exactly the positions after each query (a mask on
    the meta device, which has no values, passes when its shape fits)."""
    if mask.ndim != 2 or mask.shape[0] != mask.shape[1]:
        return False
    if mask.is_meta:
        return True
    hidden = torch.ones(mask.shape, dtype=torch.bool, device=mask.device).triu(1)
    return bool(torch.equal(torch.isneginf(mask), hidden) and (mask[~hidden] == 0).all())
