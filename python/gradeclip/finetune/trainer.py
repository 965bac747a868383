"""The fine-tuning loop (SPEC §10, paper §6): global contrastive loss + Grad-ECLIP local loss.

Per optimizer step: ``accumulate`` micro-batches, each split over the ranks of a torchrun job. For
each micro-batch: the image tower's forward gives the embeddings and the dense features; the text
tower embeds the captions and the batch's distinct phrases; the maps of every image against its
own phrases come from the last block's tokens on the current weights, without gradient; the
region embeddings they weight meet the phrases in the focal loss. AdamW, a JSON learning curve,
atomic safetensors checkpoints, exact resume.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..data import Source
from ..distributed import Ranks, barrier, gather, init_ranks
from ..errors import InputError, TrainingError
from ..towers.registry import image_tower
from ..files import write_bytes, write_json
from .checkpoint import load_checkpoint, save_checkpoint
from .collective import gather_rows, sum_gradients
from .dense import MAP_METHODS, image_forward, map_weights, phrase_maps, region_embeddings
from .losses import LOCAL_TEMPERATURE, global_loss, local_loss
from .pairs import Pair, PairStream
from .phrases import DEFAULT_K, EXTRACTORS, extractor, limit

SYNTH_MODEL = "gradeclip-synth"
#: the paper's optimiser settings (§6.2.1: lr 1e-5, weight decay 0.1, 64 pairs per GPU)
PAPER_LR = 1e-5
#: gradeclip-synth's fine-tuning rate: at 1e-4 the local loss wrecked its retrieval and region
#: classification within 12 steps of 32 pairs (benches/finetune.py), at 2e-5 it helped
SYNTH_LR = 2e-5
MAX_LOGIT_SCALE = math.log(100)
CHECKPOINT = "checkpoint.safetensors"
RECORD = "record.json"
WEIGHTS = "model.safetensors"


@dataclass
class FinetuneConfig:
    """What a fine-tuning run does.

    Attributes:
        steps: optimizer steps.
        batch_size: pairs per optimizer step over all ranks and micro-batches (the paper: 64 per GPU).
        accumulate: micro-batches per step (gradient accumulation); each micro-batch's losses are
            over its own pairs (``batch_size / accumulate`` of them, all ranks together).
        lr: AdamW learning rate; None: 1e-5 (the paper) for open_clip models, 2e-5 for gradeclip-synth.
        weight_decay: AdamW weight decay on matrices (not on gains, biases, embeddings, temperature).
        warmup: steps of linear learning-rate warm-up, then constant.
        local: add the local loss (False: ordinary fine-tuning, the global loss alone).
        local_weight: λ_l, the local loss's weight.
        local_temperature: τ_l of the local logits.
        maps: the explanation maps that weight the dense features (``gradeclip``, ``gradcam``, ``maskclip``).
        phrases: the phrase extractor (``spacy``, ``synth``) unless ``phrase_column``.
        phrase_column: take each sample's phrases from the table column the source reads as labels
            (phrases separated by ``;``) instead of extracting them.
        max_phrases: K, phrases per caption at most.
        seed: data order and initial randomness.
        log_every, checkpoint_every: steps between learning-curve points and between checkpoints.
        precision: ``"bf16"`` (autocast on a GPU; the CPU always computes in float32) or ``"fp32"``.
    """

    steps: int = 100
    batch_size: int = 64
    accumulate: int = 1
    lr: float | None = None
    weight_decay: float = 0.1
    warmup: int = 0
    local: bool = True
    local_weight: float = 1.0
    local_temperature: float = LOCAL_TEMPERATURE
    maps: str = "gradeclip"
    phrases: str = "spacy"
    phrase_column: bool = False
    max_phrases: int = DEFAULT_K
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 50
    precision: str = "bf16"
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self, world: int) -> None:
        """Raise :class:`InputError` (naming the flag) for a setting that cannot run on ``world`` ranks."""
        for flag, value in (("--steps", self.steps), ("--accumulate", self.accumulate), ("--log-every", self.log_every), ("--checkpoint-every", self.checkpoint_every)):
            if value < 1:
                raise InputError(f"{flag} must be ≥ 1, got {value}")
        micro = self.batch_size // self.accumulate
        if self.batch_size % self.accumulate or micro % world or micro < 2:
            raise InputError(
                f"--batch-size {self.batch_size} must split into --accumulate {self.accumulate} micro-batches of at least 2 pairs "
                f"each, and each micro-batch over {world} rank(s)"
            )
        if self.lr is not None and not self.lr > 0:
            raise InputError(f"--lr must be > 0, got {self.lr}")
        if self.maps not in MAP_METHODS:
            raise InputError(f"--maps must be one of {', '.join(MAP_METHODS)}, got {self.maps!r}")
        if not self.phrase_column and self.phrases not in EXTRACTORS:
            raise InputError(f"--phrases must be one of {', '.join(EXTRACTORS)}, got {self.phrases!r}")
        if self.precision not in ("bf16", "fp32"):
            raise InputError(f"--precision must be bf16 or fp32, got {self.precision!r}")
        if not self.local_temperature > 0 or self.local_weight < 0 or self.weight_decay < 0 or self.warmup < 0:
            raise InputError("--local-temperature must be > 0; --local-weight, --weight-decay and --warmup ≥ 0")


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            skip = p.ndim < 2 or "embedding" in name or "logit_scale" in name
            (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@dataclass
class StepLosses:
    """One micro-batch's losses (the same numbers on every rank) and how many regions trained."""

    total: Tensor
    global_: Tensor
    local: Tensor
    regions: int


class Finetuner:
    """The per-micro-batch computation of one rank: model, tokenizer, phrase extractor, ranks."""

    def __init__(self, model: nn.Module, tokenizer: Callable[[list[str]], Tensor], cfg: FinetuneConfig, ranks: Ranks):
        self.model, self.tokenizer, self.cfg, self.ranks = model, tokenizer, cfg, ranks
        self.tower = image_tower(model)
        self.extract = None if (cfg.phrase_column or not cfg.local) else extractor(cfg.phrases, cfg.max_phrases)
        self.skipped_phrases = 0

    def _phrases(self, pairs: list[Pair]) -> list[list[str]]:
        if not self.cfg.local:
            return [[] for _ in pairs]
        if self.extract is None:
            return [limit(p.phrases or [], self.cfg.max_phrases) for p in pairs]
        return self.extract([p.caption for p in pairs])

    def _tokens(self, texts: list[str]) -> tuple[Tensor, list[bool]]:
        """Token ids ``[T, L]`` on the device and, per text, whether it fits the context (a text
        whose ids fill the last position may have been cut)."""
        tokens = self.tokenizer(texts).to(self.ranks.device)
        return tokens, [bool(row[-1] == 0) for row in tokens]

    def losses(self, pairs: list[Pair]) -> StepLosses:
        """This rank's share ``pairs`` of a micro-batch → the micro-batch's losses, in the graph."""
        device = self.ranks.device
        phrases = self._phrases(pairs)
        images = torch.stack([p.image for p in pairs]).to(device)
        tokens, _ = self._tokens([p.caption for p in pairs])
        model = self.model
        fwd = image_forward(self.tower, images)
        text = model.encode_text(tokens)
        scale = model.logit_scale.exp()
        if self.ranks.rank > 0:
            scale = scale.detach()  # shared by every rank: its gradient is rank 0's
        loss_g = global_loss(gather_rows(fwd.embedding.float(), self.ranks), gather_rows(text.float(), self.ranks), scale.float())
        loss_l, regions = self._local(fwd, phrases)
        total = loss_g + self.cfg.local_weight * loss_l if self.cfg.local else loss_g
        return StepLosses(total, loss_g.detach(), loss_l.detach(), regions)

    def _local(self, fwd: Any, phrases: list[list[str]]) -> tuple[Tensor, int]:
        """The focal region–phrase loss of the micro-batch and its number of regions (zero loss without phrases)."""
        device = self.ranks.device
        distinct = list(dict.fromkeys(p for ps in phrases for p in ps))
        fits: list[bool] = []
        if distinct:
            tokens, fits = self._tokens(distinct)
        kept = [p for p, ok in zip(distinct, fits) if ok]
        self.skipped_phrases += len(distinct) - len(kept)
        everyone = gather(self.ranks, kept)
        columns = list(dict.fromkeys(p for ps in everyone for p in ps))  # the batch's distinct phrases
        if not columns:
            return fwd.embedding.sum() * 0.0, 0
        column = {p: j for j, p in enumerate(columns)}
        if kept:
            emb = F.normalize(self.model.encode_text(tokens[[i for i, ok in enumerate(fits) if ok]]).float(), dim=-1)
        else:
            emb = torch.zeros(0, self.tower.embed_dim, device=device)
        # each distinct phrase's embedding from the first rank that has it (its gradient flows there)
        gathered = gather_rows(emb, self.ranks)
        offsets = [0]
        for ps in everyone:
            offsets.append(offsets[-1] + len(ps))
        first: dict[str, int] = {}
        for r, ps in enumerate(everyone):
            for i, p in enumerate(ps):
                first.setdefault(p, offsets[r] + i)
        phrase_emb = gathered[[first[p] for p in columns]]
        own = {p: i for i, p in enumerate(kept)}
        slots = [[p for p in ps if p in own] for ps in phrases]
        k = max([len(s) for s in slots] + [1])
        targets = torch.zeros(len(phrases), k, emb.shape[-1], device=device)
        for b, s in enumerate(slots):
            for j, p in enumerate(s):
                targets[b, j] = emb[own[p]].detach()
        with torch.no_grad():
            maps = phrase_maps(self.tower, fwd.tail, targets, self.cfg.maps)  # [b, K, N]
        regions_all = region_embeddings(map_weights(maps), fwd.dense)  # [b, K, E]
        used = [(b, j) for b, s in enumerate(slots) for j in range(len(s))]
        if used:
            regions = regions_all[[b for b, _ in used], [j for _, j in used]]
        else:
            regions = regions_all.new_zeros(0, regions_all.shape[-1])
        index = torch.tensor([column[slots[b][j]] for b, j in used], dtype=torch.long, device=device)
        regions = gather_rows(regions.float(), self.ranks)
        index = gather_rows(index, self.ranks)
        loss = local_loss(regions, phrase_emb, index, self.cfg.local_temperature)
        if regions.shape[0] == 0:
            loss = loss + fwd.embedding.sum() * 0.0
        return loss, int(regions.shape[0])


def _learning_rate(step: int, cfg: FinetuneConfig, base: float) -> float:
    return base * min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else base


def load_model(name: str, pretrained: str | None, device: torch.device) -> tuple[nn.Module, Callable[[Any], Tensor], Callable[[list[str]], Tensor], dict[str, Any] | None]:
    """``(model, preprocess, tokenizer, synth_config)`` for fine-tuning; ``synth_config`` is the
    gradeclip-synth architecture (None for open_clip models)."""
    if name != SYNTH_MODEL:
        from ..loading import load

        return (*load(name, pretrained, device=device), None)
    from ..synth.model import build_preprocess, build_tokenizer, load_weights, shipped_weights

    model, record = load_weights(pretrained or shipped_weights())
    config = record["config"]
    return model.to(device), build_preprocess(config), build_tokenizer(config), config


def save_model(model: nn.Module, path: Path, synth_config: dict[str, Any] | None, record: dict[str, Any]) -> None:
    """Write the fine-tuned weights: gradeclip-synth's compact form (``gradeclip.load("gradeclip-synth",
    pretrained=path)``) or the open_clip state dict (``gradeclip.load(name, pretrained=path)``)."""
    if synth_config is not None:
        from ..synth.model import save_weights

        save_weights(model, synth_config, path, {"finetune": record})
        return
    from safetensors.torch import save

    write_bytes(path, save({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}))


def finetune(
    model_name: str,
    source: Source,
    out: str | os.PathLike[str],
    cfg: FinetuneConfig,
    *,
    pretrained: str | None = None,
    device: str = "auto",
    resume: bool = False,
    progress: bool = True,
    log: Callable[[dict[str, Any]], None] = lambda record: None,
) -> dict[str, Any]:
    """Fine-tune ``model_name`` (an open_clip ViT, or ``"gradeclip-synth"``) on the pairs of ``source``.

    Under torchrun every rank calls this with the same arguments (gloo on the CPU, nccl on GPUs);
    the losses are those of the whole global batch. ``out`` (a folder) receives ``record.json``
    (configuration, learning curve, skipped samples; rewritten at every log step),
    ``checkpoint.safetensors`` every ``cfg.checkpoint_every`` steps and ``model.safetensors`` at
    the end. ``resume=True`` continues from the checkpoint exactly (same data order, optimizer state).

    Returns:
        The final record (as in ``record.json``).

    Raises:
        InputError: a setting that cannot run, an empty source, a checkpoint of another
            architecture or configuration on ``resume``, an existing run in ``out`` without ``resume``.
        TrainingError: the loss became NaN or infinite (the last good checkpoint is kept).
    """
    ranks = init_ranks(device, 30.0)
    cfg.check(ranks.world)
    out = Path(out)
    ckpt_path, record_path = out / CHECKPOINT, out / RECORD
    if ranks.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    if ranks.rank == 0 and not resume and ckpt_path.exists():
        raise InputError(f"{out} already holds a run ({CHECKPOINT}); pass --resume to continue it or choose another --out")
    torch.manual_seed(cfg.seed)
    model, preprocess, tokenizer, synth_config = load_model(model_name, pretrained, ranks.device)
    model.train()
    base_lr = cfg.lr if cfg.lr is not None else (SYNTH_LR if synth_config is not None else PAPER_LR)
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=base_lr, betas=(0.9, 0.98), eps=1e-6)
    settings: dict[str, Any] = {"model": model_name, "pretrained": pretrained, "source": source.fingerprint(), "world": ranks.world, "config": asdict(cfg)}
    start, curve, skipped, elapsed = 0, [], [], 0.0
    if resume:
        if not ckpt_path.is_file():
            raise InputError(f"--resume: {ckpt_path} does not exist")
        state = load_checkpoint(ckpt_path, model, optimizer)
        saved: dict[str, Any] = state["settings"]
        changed = [k for k in ("model", "pretrained", "source", "world") if saved[k] != settings[k]]
        if _without_steps(saved["config"]) != _without_steps(settings["config"]):
            changed.append("config (only --steps may change)")
        if changed:
            raise InputError(f"--resume: checkpoint {ckpt_path} was written with another {', '.join(changed)}; resume with the same settings")
        start, curve, skipped, elapsed = state["step"], state["curve"], state["skipped"], state["elapsed"]
    runner = Finetuner(model, tokenizer, cfg, ranks)
    micro = cfg.batch_size // cfg.accumulate
    stream = iter(PairStream(source, preprocess, micro_batch=micro, rank=ranks.rank, world=ranks.world, seed=cfg.seed, start_micro=start * cfg.accumulate, phrase_column=cfg.phrase_column))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=ranks.device.type == "cuda" and cfg.precision == "bf16")

    def record(status: str) -> dict[str, Any]:
        return {"status": status, "settings": settings, "lr": base_lr, "step": step_done, "elapsed_s": round(elapsed, 2), "curve": curve, "skipped": skipped, "skipped_phrases": runner.skipped_phrases}

    from tqdm import tqdm

    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="finetune", unit="step", disable=not progress or ranks.rank > 0)
    step_done = start
    window: list[StepLosses] = []
    for step in bar:
        t0 = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(step, cfg, base_lr)
        optimizer.zero_grad(set_to_none=True)
        for _ in range(cfg.accumulate):
            pairs, bad = next(stream)
            for rank_bad in gather(ranks, bad):
                skipped.extend([key, why] for key, why in rank_bad)
            sizes = gather(ranks, len(pairs))
            if sum(sizes) < 2 or min(sizes) == 0:
                raise InputError(f"step {step + 1}: a micro-batch kept {sizes} decodable pair(s) per rank; the contrastive loss needs every rank to have pairs (see the skipped samples in {record_path})")
            with autocast:
                losses = runner.losses(pairs)
            value = float(losses.total.detach())
            if not math.isfinite(value):
                if ranks.rank == 0:
                    write_json(record_path, record(f"stopped: loss {value} at step {step + 1}"))
                kept = f"the last good checkpoint {ckpt_path} (step {curve[-1]['step'] if curve else 0}) is kept" if ckpt_path.exists() else "no checkpoint was written yet"
                raise TrainingError(f"the loss became {value} at step {step + 1} (global {float(losses.global_):.4g}, local {float(losses.local):.4g}); {kept}; lower --lr and --resume")
            (losses.total / cfg.accumulate).backward()
            window.append(losses)
        sum_gradients(model, ranks)
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        elapsed += time.perf_counter() - t0
        step_done = step + 1
        terms = {k: float(torch.stack([getattr(w, k).detach() for w in window]).mean()) for k in ("total", "global_", "local")}
        bar.set_postfix(loss=f"{terms['total']:.4f}", glob=f"{terms['global_']:.4f}", local=f"{terms['local']:.4f}")
        if step_done % cfg.log_every == 0 or step_done == cfg.steps:
            point = {"step": step_done, "loss": terms["total"], "global": terms["global_"], "local": terms["local"], "regions": sum(w.regions for w in window) / len(window), "lr": _learning_rate(step, cfg, base_lr), "elapsed_s": round(elapsed, 2)}
            curve.append(point)
            window = []
            log(point)
            if ranks.rank == 0:
                write_json(record_path, record("running"))
        if ranks.rank == 0 and (step_done % cfg.checkpoint_every == 0 or step_done == cfg.steps):
            save_checkpoint(ckpt_path, model, optimizer, {"settings": settings, "step": step_done, "curve": curve, "skipped": skipped, "elapsed": elapsed})
    final = record("done")
    if ranks.rank == 0:
        save_model(model, out / WEIGHTS, synth_config, final)
        write_json(record_path, final)
    barrier(ranks)
    return final


def _without_steps(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != "steps"}
