"""Train the tiny CLIP on the synthetic world (contrastive loss, CPU), and measure its retrieval.

Every batch is drawn fresh from the world: training step ``s`` uses train scenes
``s·B .. (s+1)·B − 1`` and captions drawn from ``default_rng((seed, CAPTION_STREAM, s))``, so a run
is a pure function of its configuration and can resume from any checkpoint exactly.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import InputError, TrainingError
from ..files import write_with
from .captions import ATTRIBUTES, Caption, caption_of, describes, random_caption
from .model import (
    DEFAULT_CONFIG,
    build_model,
    build_tokenizer,
    grow_vocabulary,
    images_to_tensor,
    save_weights,
    shrink_vocabulary,
    world_token_ids,
)
from .scenes import Scene, make_scene, make_scenes

CAPTION_STREAM = 7
MONITOR_SEED_OFFSET = 1000
WORKER_TIMEOUT = datetime.timedelta(minutes=15)  # a worker waiting longer than this for the others fails


@dataclass
class TrainConfig:
    """What a training run does. ``model`` is the architecture (:data:`~gradeclip.synth.model.DEFAULT_CONFIG`);
    ``workers`` processes share each batch (data parallel), each with ``threads`` torch threads."""

    steps: int = 2400
    batch_size: int = 128
    lr: float = 1e-3
    min_lr_ratio: float = 0.05
    warmup: int = 100
    weight_decay: float = 0.1
    seed: int = 0
    threads: int = 1
    workers: int = 2
    loss: str = "truthful"
    twins: bool = True
    complete_captions: float = 0.5
    attribute_rate: float = 0.5
    log_every: int = 25
    checkpoint_every: int = 100
    eval_every: int = 250
    eval_size: int = 1000
    model: dict[str, Any] = field(default_factory=lambda: json.loads(json.dumps(DEFAULT_CONFIG)))

    def check(self) -> None:
        """Raise :class:`InputError` for a setting that cannot run."""
        for name in ("steps", "batch_size", "threads", "workers", "log_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise InputError("batch_size must be ≥ 2 (the contrastive loss needs negatives)")
        share = self.batch_size // self.workers
        if self.batch_size % self.workers or share < 2 or (self.twins and share % 2):
            even = " even" if self.twins else ""
            raise InputError(f"batch_size {self.batch_size} must split into {self.workers} equal{even} shares of at least 2")
        if self.loss not in ("truthful", "diagonal"):
            raise InputError(f"loss must be 'truthful' (every described image is a positive) or 'diagonal' (plain CLIP), got {self.loss!r}")
        for name in ("complete_captions", "attribute_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputError(f"{name} is a probability in [0, 1], got {getattr(self, name)}")
        if not self.lr > 0:
            raise InputError(f"lr must be > 0, got {self.lr}")
        if self.warmup < 0 or self.eval_size < 0:
            raise InputError("warmup and eval_size must be ≥ 0")


def training_batch(
    step: int,
    batch_size: int,
    seed: int,
    image_size: int,
    part: tuple[int, int] | None = None,
    twins: bool = True,
    captions: tuple[float, float] = (0.5, 0.5),
) -> tuple[list[Scene], list[Caption]]:
    """The scenes and captions of training step ``step`` (batch positions ``part = (begin, end)``,
    all when None). ``captions`` is ``(complete, attribute)`` of
    :func:`~gradeclip.synth.captions.random_caption`.

    With ``twins``, positions 2i and 2i + 1 hold train scene ``step·B/2 + i`` and its hard-negative
    twin (:func:`~gradeclip.synth.scenes.make_scene` with ``twin=True``); without, position i holds
    scene ``step·B + i``. Each scene's caption comes from ``default_rng((seed, CAPTION_STREAM,
    index, twin))``, so a batch's data do not depend on how it is split between workers.
    """
    begin, end = part if part is not None else (0, batch_size)
    if twins:
        keys = [(step * (batch_size // 2) + p // 2, p % 2 == 1) for p in range(begin, end)]
    else:
        keys = [(step * batch_size + p, False) for p in range(begin, end)]
    scenes = [make_scene(index, "train", seed, image_size, twin=twin) for index, twin in keys]
    texts = [random_caption(s, np.random.default_rng((seed, CAPTION_STREAM, s.index, int(s.twin))), *captions) for s in scenes]
    return scenes, texts


def scenes_to_tensor(scenes: list[Scene], config: dict[str, Any]) -> Tensor:
    """The model's input ``[B, 3, S, S]`` for ``scenes``."""
    return images_to_tensor(torch.from_numpy(np.stack([s.image for s in scenes])), config)


def contrastive_loss(image_features: Tensor, text_features: Tensor, logit_scale: Tensor, positives: Tensor | None = None) -> Tensor:
    """CLIP's symmetric cross-entropy over the batch's image–text similarities (features ``[B, E]``, unit-norm).

    ``positives`` ``[B texts, B images]`` bool marks every image a text truthfully describes (the
    diagonal always). When given, each text's target is spread evenly over its positive images,
    and each image's over its positive texts, instead of the diagonal alone — the batch's false
    negatives (another image that also has "a red circle") stop being pushed away. None: the
    diagonal (plain CLIP).
    """
    logits = logit_scale * image_features @ text_features.T  # [images, texts]
    if positives is None:
        labels = torch.arange(logits.shape[0], device=logits.device)
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
    target = positives.to(logits.dtype)
    text_to_image = -(target / target.sum(1, keepdim=True) * F.log_softmax(logits.T, dim=1)).sum(1).mean()
    image_to_text = -(target.T / target.T.sum(1, keepdim=True) * F.log_softmax(logits, dim=1)).sum(1).mean()
    return 0.5 * (text_to_image + image_to_text)


def positive_pairs(captions: list[Caption], scenes: list[Scene]) -> Tensor:
    """``[T, I]`` bool: whether caption t truthfully describes scene i (:func:`describes`)."""
    return torch.tensor([[describes(c, s) for s in scenes] for c in captions], dtype=torch.bool)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        skip = p.ndim < 2 or "embedding" in name or "logit_scale" in name
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up over ``cfg.warmup`` steps, then cosine decay to ``cfg.min_lr_ratio · cfg.lr``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


@torch.no_grad()
def retrieval(
    model: nn.Module,
    tokenizer: Callable[[list[str]], Tensor],
    config: dict[str, Any],
    count: int = 1000,
    split: str = "test",
    seed: int = 0,
    attributes: tuple[str, ...] = ATTRIBUTES,
    batch_size: int = 250,
) -> dict[str, float]:
    """Text→image retrieval among ``count`` scenes of ``split``, one complete caption per scene.

    Each scene's caption mentions every object with ``attributes``. A caption's top-ranked image
    counts as correct for ``r1`` when the caption truthfully describes it (its own scene, or another
    scene the caption fits just as well — :func:`~gradeclip.synth.captions.describes`); ``r1_strict``
    counts only the caption's own scene. ``r5`` is the truthful version at rank 5.

    Returns:
        ``{"r1", "r1_strict", "r5", "count"}``.
    """
    model.eval()
    scenes = make_scenes(count, split, seed, config["vision_cfg"]["image_size"])
    captions = [caption_of(s, attributes=attributes) for s in scenes]
    img, txt = [], []
    for i in range(0, count, batch_size):
        img.append(F.normalize(model.encode_image(scenes_to_tensor(scenes[i : i + batch_size], config)), dim=-1))
        txt.append(F.normalize(model.encode_text(tokenizer([c.text for c in captions[i : i + batch_size]])), dim=-1))
    sims = torch.cat(txt) @ torch.cat(img).T  # [captions, images]
    top = sims.topk(min(5, count), dim=1).indices.numpy()
    r1 = np.mean([describes(c, scenes[t[0]]) for c, t in zip(captions, top)])
    r5 = np.mean([any(describes(c, scenes[j]) for j in t) for c, t in zip(captions, top)])
    strict = np.mean(top[:, 0] == np.arange(count))
    return {"r1": float(r1), "r1_strict": float(strict), "r5": float(r5), "count": float(count)}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _average_gradients(params: list[nn.Parameter], world: int) -> None:
    """Sum every gradient across the workers (one flat all-reduce) and divide by ``world``."""
    import torch.distributed as dist

    grads = [p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def _exit_with_parent() -> None:
    """On Linux, have the kernel end this process when its parent dies (best effort elsewhere: the
    worker then stops at its next all-reduce, after ``WORKER_TIMEOUT``)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _worker(rank: int, cfg: TrainConfig, out: Path, port: int, queue: Any, progress: bool) -> None:
    """One data-parallel worker process; rank 0 sends ``("log", record)``, then ``("done", record)``
    or ``("error", exception)`` through ``queue``."""
    import torch.distributed as dist

    _exit_with_parent()

    def send(kind: str, payload: Any) -> None:
        if rank == 0:
            queue.put((kind, payload))

    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=cfg.workers, timeout=WORKER_TIMEOUT)
        try:
            record = _loop(cfg, out, rank, lambda r: send("log", r), progress)
        finally:
            dist.destroy_process_group()
    except Exception as exc:
        send("error", exc)
        raise
    send("done", record)


def train(
    cfg: TrainConfig,
    out: str | os.PathLike[str],
    log: Callable[[dict[str, Any]], None] = lambda record: None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train, evaluate held-out retrieval, and write the weights to ``out`` (``.safetensors`` + ``.json``).

    With ``cfg.workers > 1``, that many worker processes each take an equal share of every batch,
    compute the contrastive loss within their share and average their gradients (gloo all-reduce
    over localhost): data-parallel training that keeps each process single-threaded. This process
    only waits, relays rank 0's log records to ``log``, and stops every worker if one fails.

    A checkpoint ``<out>.ckpt`` is written every ``cfg.checkpoint_every`` steps (atomically); a run
    with the same ``out`` and configuration resumes from it. ``log`` receives one dict per log line
    (step, loss, learning rate, images/s, wall and CPU seconds) and per evaluation.

    Returns:
        The record stored beside the weights: configuration, steps, wall and CPU time, throughput
        and the retrieval numbers.

    Raises:
        InputError: a setting that cannot run, or a checkpoint from another configuration.
        TrainingError: a worker process died.
    """
    cfg.check()
    out = Path(out)
    if cfg.workers == 1:  # in this process: give the caller its own thread count back afterwards
        threads = torch.get_num_threads()
        try:
            return _loop(cfg, out, 0, log, progress)
        finally:
            torch.set_num_threads(threads)
    import queue as queue_module

    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    channel = ctx.Queue()
    port = _free_port()
    workers = [ctx.Process(target=_worker, args=(rank, cfg, out, port, channel, progress)) for rank in range(cfg.workers)]
    for worker in workers:
        worker.start()
    try:
        while True:
            try:
                kind, payload = channel.get(timeout=1.0)
            except queue_module.Empty:
                dead = [(rank, w.exitcode) for rank, w in enumerate(workers) if w.exitcode not in (None, 0)]
                if dead:
                    raise TrainingError(f"training worker(s) died: {', '.join(f'rank {r} (exit code {c})' for r, c in dead)}") from None
                continue
            if kind == "log":
                log(payload)
            elif kind == "error":
                raise payload
            else:
                return payload
    finally:
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.terminate()
                worker.join()


def _loop(cfg: TrainConfig, out: Path, rank: int, log: Callable[[dict[str, Any]], None], progress: bool) -> dict[str, Any]:
    """The training loop of worker ``rank`` (rank 0 logs, checkpoints, evaluates and saves)."""
    from tqdm import tqdm

    torch.set_num_threads(cfg.threads)
    ckpt_path = out.with_name(out.name + ".ckpt")
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model)
    tokenizer = build_tokenizer(cfg.model)
    # train only the embedding rows the world's captions use (the rest would get no gradient anyway)
    vocab = world_token_ids(cfg.model)
    lut = shrink_vocabulary(model, vocab)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    start, elapsed, cpu, seen = 0, 0.0, 0.0, 0
    curve: list[dict[str, float]] = []
    if ckpt_path.is_file():
        state = torch.load(ckpt_path, weights_only=True)
        if state["cfg"] != asdict(cfg):
            raise InputError(f"checkpoint {ckpt_path} was written by a different configuration; delete it or use another output")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, elapsed, cpu, seen, curve = state["step"], state["elapsed"], state["cpu"], state["seen"], state["curve"]
    image_size = cfg.model["vision_cfg"]["image_size"]
    share = cfg.batch_size // cfg.workers
    model.train()
    t0, c0 = time.perf_counter(), time.process_time()
    window_t, window_n = t0, 0
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=not progress or rank > 0, desc="train", unit="step")
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, cfg)
        part = (rank * share, (rank + 1) * share)
        scenes, captions = training_batch(step, cfg.batch_size, cfg.seed, image_size, part, cfg.twins, (cfg.complete_captions, cfg.attribute_rate))
        images = scenes_to_tensor(scenes, cfg.model)
        tokens = lut[tokenizer([c.text for c in captions])]
        image_features, text_features, logit_scale = model(images, tokens)[:3]
        positives = positive_pairs(captions, scenes) if cfg.loss == "truthful" else None
        loss = contrastive_loss(image_features, text_features, logit_scale, positives)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.workers > 1:
            _average_gradients(params, cfg.workers)
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        window_n += cfg.batch_size
        seen += cfg.batch_size
        done = step + 1
        if rank > 0:
            continue
        if done % cfg.log_every == 0 or done == cfg.steps:
            now = time.perf_counter()
            record = {
                "step": done,
                "loss": round(float(loss.detach()), 4),
                "lr": learning_rate(step, cfg),
                "images_per_s": round(window_n / (now - window_t), 1),
                "elapsed_s": round(elapsed + now - t0, 1),
                "cpu_s": round(cpu + time.process_time() - c0, 1),
            }
            window_t, window_n = now, 0
            bar.set_postfix(loss=record["loss"], ips=record["images_per_s"])
            log(record)
        if cfg.eval_every and cfg.eval_size and done % cfg.eval_every == 0 and done < cfg.steps:
            # a learning-curve point on held-out-pair scenes drawn with another seed than the final
            # evaluation's, so watching the curve never looks at the reported test scenes
            tokens_of = lambda texts: lut[tokenizer(texts)]  # noqa: E731
            numbers = retrieval(model, tokens_of, cfg.model, cfg.eval_size, "test", cfg.seed + MONITOR_SEED_OFFSET)
            model.train()
            curve.append({"step": done, **numbers})
            log({"step": done, "eval": "monitor_full", **numbers})
        if done % cfg.checkpoint_every == 0 and done < cfg.steps:
            state = {"cfg": asdict(cfg), "model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": done}
            times = {"elapsed": elapsed + time.perf_counter() - t0, "cpu": cpu + time.process_time() - c0}
            checkpoint = {**state, **times, "seen": seen, "curve": curve}
            write_with(ckpt_path, lambda f: torch.save(checkpoint, f))
    train_s = elapsed + time.perf_counter() - t0
    cpu_s = torch.tensor([cpu + time.process_time() - c0], dtype=torch.float64)
    if cfg.workers > 1:
        import torch.distributed as dist

        dist.all_reduce(cpu_s)  # CPU seconds of all workers together
    if rank > 0:
        return {}
    grow_vocabulary(model, vocab, cfg.model["text_cfg"]["vocab_size"])
    model.eval()
    results: dict[str, Any] = {}
    if cfg.eval_size:
        for name, attrs, split in (
            ("test_full", ATTRIBUTES, "test"),
            ("test_colour_shape", ("colour", "shape"), "test"),
            ("val_full", ATTRIBUTES, "val"),
        ):
            results[name] = retrieval(model, tokenizer, cfg.model, cfg.eval_size, split, cfg.seed, attrs)
            log({"eval": name, **results[name]})
    total_cpu = float(cpu_s)
    record = {
        "train": asdict(cfg) | {"model": None},
        "train_seconds": round(train_s, 1),
        "train_cpu_seconds": round(total_cpu, 1),
        "images_seen": seen,
        "images_per_s": round(seen / train_s, 1) if train_s else None,
        "images_per_cpu_s": round(seen / total_cpu, 1) if total_cpu else None,
        "torch": torch.__version__,
        "retrieval": results,
        "learning_curve": curve,
    }
    save_weights(model, cfg.model, out, record)
    ckpt_path.unlink(missing_ok=True)
    return record
