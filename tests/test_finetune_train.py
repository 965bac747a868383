"""The fine-tuning loop: two CPU ranks give one process's losses, exact resume, refused
checkpoints, a NaN stop that keeps the last good checkpoint, skipped samples, the CLI. Every run
trains a tiny random model of gradeclip-synth's architecture (``tiny_models.tiny_synth_weights``)."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch

from gradeclip.data import open_source
from gradeclip.errors import InputError, TrainingError
from gradeclip.finetune import FinetuneConfig, finetune
from gradeclip.finetune.checkpoint import load_checkpoint, save_checkpoint
from gradeclip.synth.export import write_pairs


def _config(**overrides):
    base = dict(steps=2, batch_size=4, phrases="synth", log_every=1, checkpoint_every=1, lr=2e-4)
    base.update(overrides)
    return FinetuneConfig(**base)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return write_pairs(tmp_path_factory.mktemp("pairs"), 24, seed=5)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tiny_models import tiny_synth_weights

    return str(tiny_synth_weights(tmp_path_factory.mktemp("tiny") / "tiny.safetensors"))


def _run(tiny, source, out, cfg, **kwargs):
    """``finetune`` of the tiny model on the CPU without a progress bar: the run's record."""
    return finetune("gradeclip-synth", source, out, cfg, pretrained=tiny, device="cpu", progress=False, **kwargs)


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def _gradients(tiny, table, cfg, ranks):
    """Every parameter's gradient of the first micro-batch's loss, summed over the ranks."""
    from gradeclip.finetune.collective import sum_gradients
    from gradeclip.finetune.pairs import PairStream
    from gradeclip.finetune.trainer import Finetuner, load_model

    model, preprocess, tokenizer, _ = load_model("gradeclip-synth", tiny, ranks.device)
    stream = PairStream(open_source(table), preprocess, micro_batch=cfg.batch_size, rank=ranks.rank, world=ranks.world, seed=cfg.seed, start_micro=0)
    pairs, _ = next(iter(stream))
    Finetuner(model, tokenizer, cfg, ranks).losses(pairs).total.backward()
    sum_gradients(model, ranks)
    return {name: p.grad for name, p in model.named_parameters()}


def _rank(rank, world, port, tiny, table, out, cfg):
    from safetensors.torch import save_file

    from gradeclip.distributed import init_ranks

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    try:
        _run(tiny, open_source(table), out, cfg)
        grads = _gradients(tiny, table, cfg, init_ranks("cpu", 5.0))
        if rank == 0:
            save_file(grads, os.path.join(out, "grads.safetensors"))
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.slow
def test_two_cpu_ranks_give_the_losses_of_one_process(pairs, tiny, tmp_path):
    cfg = _config()  # 2 steps of 4 pairs: 2 per rank
    one = _run(tiny, open_source(pairs), tmp_path / "one", cfg)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = torch.multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_rank, args=(r, 2, port, tiny, str(pairs), str(tmp_path / "two"), cfg)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]
    two = json.loads((tmp_path / "two" / "record.json").read_text())
    assert two["settings"]["world"] == 2 and one["settings"]["world"] == 1
    for a, b in zip(one["curve"], two["curve"], strict=True):
        assert a["regions"] == b["regions"] > 0
        for term in ("loss", "global", "local"):
            assert a[term] == pytest.approx(b[term], rel=1e-4, abs=1e-5), (term, a, b)
    w1, w2 = _weights(tmp_path / "one" / "model.safetensors"), _weights(tmp_path / "two" / "model.safetensors")
    for name in w1:
        a, b = w1[name], w2[name]
        if name.endswith("in_proj_bias"):  # the key bias's true gradient is 0: Adam scales its float noise up to ±lr
            keep = torch.ones_like(a, dtype=torch.bool)
            keep[a.shape[0] // 3 : 2 * a.shape[0] // 3] = False
            a, b = a[keep], b[keep]
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    # Adam hides a gradient's scale: compare the gradients themselves (summed over the ranks)
    from gradeclip.distributed import Ranks

    g1 = _gradients(tiny, pairs, cfg, Ranks(0, 1, torch.device("cpu")))
    g2 = _weights(tmp_path / "two" / "grads.safetensors")
    assert g1["logit_scale"].abs().item() > 0
    for name in g1:
        torch.testing.assert_close(g1[name], g2[name], rtol=1e-4, atol=1e-6, msg=name)


def test_resume_continues_exactly(tiny, pairs, tmp_path):
    straight = _run(tiny, open_source(pairs), tmp_path / "a", _config(steps=2, batch_size=4, accumulate=2, checkpoint_every=5))
    _run(tiny, open_source(pairs), tmp_path / "b", _config(steps=1, batch_size=4, accumulate=2))
    with pytest.raises(InputError, match="--resume"):
        _run(tiny, open_source(pairs), tmp_path / "b", _config(steps=2, batch_size=4, accumulate=2))
    with pytest.raises(InputError, match="another config"):
        _run(tiny, open_source(pairs), tmp_path / "b", _config(steps=2, batch_size=4, accumulate=1), resume=True)
    resumed = _run(tiny, open_source(pairs), tmp_path / "b", _config(steps=2, batch_size=4, accumulate=2), resume=True)
    assert [p["loss"] for p in resumed["curve"]] == pytest.approx([p["loss"] for p in straight["curve"]], rel=1e-6)
    w1, w2 = _weights(tmp_path / "a" / "model.safetensors"), _weights(tmp_path / "b" / "model.safetensors")
    for name in w1:
        torch.testing.assert_close(w1[name], w2[name], rtol=1e-6, atol=1e-7)


def test_checkpoint_of_another_architecture_is_refused(tmp_path, tiny_model):
    from gradeclip.synth.model import load_synth

    synth, _, _ = load_synth()
    opt = torch.optim.AdamW(synth.parameters())
    save_checkpoint(tmp_path / "c.safetensors", synth, opt, {"step": 0})
    with pytest.raises(InputError, match="--resume.*another architecture"):
        load_checkpoint(tmp_path / "c.safetensors", tiny_model, torch.optim.AdamW(tiny_model.parameters()))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny, pairs, tmp_path):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    out = tmp_path / "run"
    _run(tiny, open_source(pairs), out, _config(steps=1))
    ckpt = out / "checkpoint.safetensors"
    with safe_open(str(ckpt), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(ckpt))
    tensors["model.visual.proj"][0, 0] = float("nan")  # a diverged model
    save_file(tensors, str(ckpt), metadata=meta)
    before = ckpt.read_bytes()
    with pytest.raises(TrainingError, match="nan at step 2.*last good checkpoint"):
        _run(tiny, open_source(pairs), out, _config(steps=3), resume=True)
    assert ckpt.read_bytes() == before
    assert json.loads((out / "record.json").read_text())["status"].startswith("stopped")


def test_skips_are_recorded_and_captions_without_phrases_train_globally(tiny, tmp_path):
    from PIL import Image

    Image.new("RGB", (64, 64), (200, 10, 10)).save(tmp_path / "a.png")
    Image.new("RGB", (64, 64), (10, 10, 200)).save(tmp_path / "b.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    rows = ["image,caption", "a.png,a red square", "b.png,nothing here", "bad.png,a blue circle", "a.png,"]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    record = _run(tiny, open_source(tmp_path / "t.csv"), tmp_path / "out", _config(steps=1, batch_size=4))
    reasons = dict(record["skipped"])
    assert set(reasons) == {"2", "3"} and "no caption" in reasons["3"] and "image" in reasons["2"]
    # a micro-batch of 2 kept pairs: one phrase ("red square"), one caption without any
    assert record["curve"][0]["regions"] == 1


def test_empty_source_is_an_input_error(tiny, tmp_path):
    (tmp_path / "t.csv").write_text("image,caption\n")
    with pytest.raises(InputError, match="no samples"):
        _run(tiny, open_source(tmp_path / "t.csv"), tmp_path / "out", _config())


def test_cli_runs_and_reports(tiny, pairs, tmp_path, capsys):
    from gradeclip.cli import main

    code = main(["finetune", "--model", "gradeclip-synth", "--pretrained", tiny, "--data", str(pairs), "--phrases", "synth", "--out", str(tmp_path / "o"), "--steps", "1", "--batch-size", "2", "--maps", "maskclip", "--no-progress", "--device", "cpu"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 1
    code = main(["finetune", "--model", "gradeclip-synth", "--data", str(pairs), "--out", str(tmp_path / "o2"), "--batch-size", "3", "--accumulate", "2", "--device", "cpu"])
    assert code == 2 and "--batch-size 3" in capsys.readouterr().err


def test_a_users_phrase_column_replaces_extraction(tiny, tmp_path):
    from PIL import Image

    for name, colour in (("a.png", (200, 10, 10)), ("b.png", (10, 10, 200))):
        Image.new("RGB", (64, 64), colour).save(tmp_path / name)
    rows = ["image,caption,phrases", "a.png,whatever the caption says,red thing; big square ;red thing", "b.png,a blue circle,"]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    source = open_source(tmp_path / "t.csv", label_column="phrases")
    record = _run(tiny, source, tmp_path / "out", _config(steps=1, batch_size=2, phrase_column=True))
    # two distinct phrases from the column for a.png, none for b.png (its caption's "blue circle" is not extracted)
    assert record["curve"][0]["regions"] == 2
