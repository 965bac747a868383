"""``gradeclip finetune``: fine-grained fine-tuning with Grad-ECLIP maps (paper §6, SPEC §10).

    gradeclip synth pairs --out synth-pairs --count 4096
    gradeclip finetune --model gradeclip-synth --data synth-pairs/pairs.csv --phrases synth --out ft
    torchrun --nproc-per-node 2 -m gradeclip finetune --model ViT-B-16 --pretrained openai \\
        --data 'cc3m/{00000..00331}.tar' --out ft-vitb16

Writes ``OUT/record.json`` (learning curve, skipped samples), ``OUT/checkpoint.safetensors`` and
``OUT/model.safetensors`` (load it with ``gradeclip.load(MODEL, pretrained=OUT/model.safetensors)``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import GradeclipError


def add_parser(subparsers: Any) -> None:
    """Register ``gradeclip finetune``."""
    from ..finetune.dense import MAP_METHODS
    from ..finetune.phrases import DEFAULT_K, EXTRACTORS
    from ..finetune.trainer import FinetuneConfig

    d = FinetuneConfig()
    p = subparsers.add_parser(
        "finetune", help="fine-tune a CLIP ViT with the Grad-ECLIP local loss (paper §6)", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", required=True, help="open_clip ViT architecture (e.g. ViT-B-16) or gradeclip-synth")
    p.add_argument("--pretrained", default=None, help="open_clip tag or checkpoint file (gradeclip-synth: its shipped weights)")
    p.add_argument("--data", required=True, help="image–caption pairs: a folder with captions, a .csv/.tsv/.parquet table, or webdataset shards")
    p.add_argument("--image-column", default=None)
    p.add_argument("--caption-column", default=None)
    p.add_argument("--phrase-column", default=None, help="table column holding each caption's phrases, separated by ';' (instead of extracting them)")
    p.add_argument("--out", type=Path, required=True, help="output folder (record.json, checkpoint.safetensors, model.safetensors)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="pairs per optimizer step, all ranks together")
    p.add_argument("--accumulate", type=int, default=d.accumulate, help="micro-batches per step (gradient accumulation)")
    p.add_argument("--lr", type=float, default=None, help="AdamW learning rate (default 1e-5, the paper's; 2e-5 for gradeclip-synth)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--warmup", type=int, default=d.warmup, help="linear warm-up steps")
    p.add_argument("--no-local", action="store_true", help="ordinary fine-tuning: the global loss alone")
    p.add_argument("--local-weight", type=float, default=d.local_weight, help="λ_l, weight of the local loss")
    p.add_argument("--local-temperature", type=float, default=d.local_temperature, help="τ_l of the local logits")
    p.add_argument("--maps", choices=MAP_METHODS, default=d.maps, help="explanation maps weighting the dense features")
    p.add_argument("--phrases", choices=EXTRACTORS, default=d.phrases, help="phrase extractor: spaCy noun chunks or the synthetic world's rule")
    p.add_argument("--max-phrases", type=int, default=DEFAULT_K, help="K, phrases per caption at most")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--device", default="auto", help="auto (the local rank's GPU when there is one), cpu, cuda, cuda:N")
    p.add_argument("--precision", choices=("bf16", "fp32"), default=d.precision, help="bf16 autocast on GPUs (the CPU computes in fp32)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per process")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the fine-tuning; prints the final record's summary. Returns the exit status."""
    import torch

    from ..data import open_source
    from ..finetune.trainer import FinetuneConfig, finetune

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = FinetuneConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        accumulate=args.accumulate,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup=args.warmup,
        local=not args.no_local,
        local_weight=args.local_weight,
        local_temperature=args.local_temperature,
        maps=args.maps,
        phrases=args.phrases,
        phrase_column=args.phrase_column is not None,
        max_phrases=args.max_phrases,
        seed=args.seed,
        log_every=args.log_every,
        checkpoint_every=args.checkpoint_every,
        precision=args.precision,
    )
    try:
        source = open_source(args.data, image_column=args.image_column, caption_column=args.caption_column, label_column=args.phrase_column)
        record = finetune(args.model, source, args.out, cfg, pretrained=args.pretrained, device=args.device, resume=args.resume, progress=not args.no_progress)
    except GradeclipError as exc:
        print(f"gradeclip finetune: {exc}", file=sys.stderr)
        return 2
    last = record["curve"][-1] if record["curve"] else {}
    print(json.dumps({"weights": str(args.out / "model.safetensors"), "steps": record["step"], "last": last, "skipped": len(record["skipped"])}, indent=2))
    return 0
