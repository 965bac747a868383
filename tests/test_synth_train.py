"""Training the tiny CLIP: a few steps lower the loss, runs resume exactly, weights round-trip."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from gradeclip.errors import InputError, ModelLoadError
from gradeclip.synth.model import build_model, build_tokenizer, load_weights, world_token_ids
from gradeclip.synth.train import TrainConfig, contrastive_loss, scenes_to_tensor, train, training_batch
from gradeclip.synth import make_scenes, random_caption


def tiny_config(**overrides) -> TrainConfig:
    model = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 2, "head_width": 16, "mlp_ratio": 2.0},
        "text_cfg": {"context_length": 48, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1, "mlp_ratio": 2.0},
        "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
    }
    fields = dict(steps=150, batch_size=32, lr=5e-3, warmup=10, workers=1, log_every=25, checkpoint_every=50, eval_every=0, eval_size=0, model=model)
    fields.update(overrides)
    return TrainConfig(**fields)


def held_batch_loss(model, config) -> float:
    """The plain (diagonal) contrastive loss on a fixed batch of validation scenes (never trained on)."""
    scenes = make_scenes(64, "val", seed=11, size=config["vision_cfg"]["image_size"])
    rng = np.random.default_rng(0)
    texts = [random_caption(s, rng).text for s in scenes]
    with torch.no_grad():
        image, text, scale = model(scenes_to_tensor(scenes, config), build_tokenizer(config)(texts))[:3]
        return float(contrastive_loss(image, text, scale))


def test_a_few_steps_lower_the_loss(tmp_path):
    """150 small steps take a tiny model's loss on unseen scenes below chance (ln 64), not just
    from its badly calibrated start down to chance."""
    cfg = tiny_config()
    torch.manual_seed(cfg.seed)
    before = held_batch_loss(build_model(cfg.model), cfg.model)  # train() starts from this very model
    logged = []
    record = train(cfg, tmp_path / "w.safetensors", log=logged.append, progress=False)
    model, stored = load_weights(tmp_path / "w.safetensors")
    after = held_batch_loss(model, cfg.model)
    assert after < math.log(64) - 0.15 and after < before - 0.5, (before, after)
    assert [r["step"] for r in logged] == list(range(25, 151, 25))
    assert record["images_seen"] == 150 * 32 and stored["images_seen"] == record["images_seen"]
    assert not (tmp_path / "w.safetensors.ckpt").exists()


def test_training_in_process_gives_back_the_callers_thread_count(tmp_path, monkeypatch):
    """With one worker the loop runs in the caller's process at ``cfg.threads``; afterwards the
    caller has its own thread count again (it used to stay at ``cfg.threads`` for good)."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)  # the caller's count, whatever this machine has
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    train(tiny_config(steps=2, threads=1, log_every=1, checkpoint_every=1), tmp_path / "w.safetensors", progress=False)
    assert calls == [1, 3]


def test_interrupted_run_resumes_exactly(tmp_path):
    cfg = tiny_config(steps=8, batch_size=16, log_every=1, checkpoint_every=4)
    train(cfg, tmp_path / "whole.safetensors", progress=False)

    def stop_at_6(record):
        if record.get("step") == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "resumed.safetensors", log=stop_at_6, progress=False)
    assert (tmp_path / "resumed.safetensors.ckpt").exists()
    train(cfg, tmp_path / "resumed.safetensors", progress=False)
    whole, _ = load_weights(tmp_path / "whole.safetensors")
    resumed, _ = load_weights(tmp_path / "resumed.safetensors")
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    # a checkpoint from another configuration is refused, not silently mixed in
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "other.safetensors", log=stop_at_6, progress=False)
    with pytest.raises(InputError, match="different configuration"):
        train(tiny_config(steps=8, batch_size=16, log_every=1, checkpoint_every=4, lr=1e-3), tmp_path / "other.safetensors", progress=False)


def test_weights_round_trip_with_the_compact_embedding(tmp_path):
    cfg = tiny_config(steps=2, warmup=1)
    train(cfg, tmp_path / "w.safetensors", progress=False)
    model, record = load_weights(tmp_path / "w.safetensors")
    assert record["config"] == cfg.model
    table = model.token_embedding.weight
    used = torch.tensor(world_token_ids(cfg.model))
    assert table[used].abs().sum(1).gt(0).all()
    unused = torch.ones(table.shape[0], dtype=torch.bool)
    unused[used] = False
    assert table[unused].abs().max() == 0
    # every token any caption uses has a trained row
    tokens = build_tokenizer(cfg.model)([random_caption(s, np.random.default_rng(1)).text for s in make_scenes(200, "test", size=32)])
    assert set(tokens.unique().tolist()) <= set(used.tolist())
    (tmp_path / "w.json").write_text(json.dumps({"config": {"embed_dim": 99}}))
    with pytest.raises(ModelLoadError, match="could not load"):
        load_weights(tmp_path / "w.safetensors")
    with pytest.raises(ModelLoadError, match="not found"):
        load_weights(tmp_path / "missing.safetensors")


def test_longest_possible_caption_fits_the_context():
    """Four objects with every attribute, the longest words and the longest prefix: no truncation."""
    from gradeclip.synth.captions import PREFIXES, Mention, join_phrases
    from gradeclip.synth.model import DEFAULT_CONFIG
    from gradeclip.synth.world import COLOURS, REGIONS, SHAPES, SIZES

    tokenizer = build_tokenizer(DEFAULT_CONFIG)
    encode = tokenizer.encode
    phrase = max((Mention(c, s, z, r).phrase() for c in COLOURS for s in SHAPES for z in SIZES for r, _ in REGIONS), key=lambda p: len(encode(p)))
    text = max((p.format(join_phrases([phrase] * 4)) for p in PREFIXES), key=lambda t: len(encode(t)))
    assert len(encode(text)) + 2 <= DEFAULT_CONFIG["text_cfg"]["context_length"]


def test_bad_training_settings_are_refused(tmp_path):
    with pytest.raises(InputError, match="batch_size"):
        train(tiny_config(batch_size=1), tmp_path / "w.safetensors", progress=False)
    with pytest.raises(InputError, match="lr"):
        train(tiny_config(lr=0.0), tmp_path / "w.safetensors", progress=False)
    with pytest.raises(InputError, match="complete_captions"):
        train(tiny_config(complete_captions=1.2), tmp_path / "w.safetensors", progress=False)
    with pytest.raises(InputError, match="even"):
        train(tiny_config(batch_size=18, workers=2), tmp_path / "w.safetensors", progress=False)
    scenes, captions = training_batch(3, 4, 0, 32)
    assert len(scenes) == len(captions) == 4
    assert [(s.index, s.twin) for s in scenes] == [(6, False), (6, True), (7, False), (7, True)]
    scenes, _ = training_batch(3, 4, 0, 32, part=(2, 4), twins=False)
    assert [(s.index, s.twin) for s in scenes] == [(14, False), (15, False)]


@pytest.mark.slow
def test_two_workers_match_one_process_averaging_their_losses(tmp_path):
    """Data-parallel training (2 processes, gloo) equals, step for step, one process minimising the
    mean of the two shares' contrastive losses."""
    from gradeclip.synth.model import grow_vocabulary, shrink_vocabulary
    from gradeclip.synth.train import _param_groups, learning_rate, positive_pairs

    cfg = tiny_config(steps=3, batch_size=16, workers=2, warmup=1, log_every=1)
    train(cfg, tmp_path / "ddp.safetensors", progress=False)
    parallel, _ = load_weights(tmp_path / "ddp.safetensors")

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model)
    vocab = world_token_ids(cfg.model)
    lut = shrink_vocabulary(model, vocab)
    tokenizer = build_tokenizer(cfg.model)
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    model.train()
    for step in range(cfg.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, cfg)
        scenes, captions = training_batch(step, cfg.batch_size, cfg.seed, 32)
        losses = []
        for half in (slice(0, 8), slice(8, 16)):
            image, text, scale = model(scenes_to_tensor(scenes[half], cfg.model), lut[tokenizer([c.text for c in captions[half]])])[:3]
            losses.append(contrastive_loss(image, text, scale, positive_pairs(captions[half], scenes[half])))
        optimizer.zero_grad()
        (0.5 * (losses[0] + losses[1])).backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
    grow_vocabulary(model, vocab, cfg.model["text_cfg"]["vocab_size"])
    # Compare what the models compute, not every parameter: the key bias gets no true gradient
    # (softmax ignores it), so Adam turns float-rounding noise there into full-size steps that
    # differ between any two summation orders, yet change no output.
    model.eval()
    scenes = make_scenes(24, "val", seed=5, size=32)
    texts = [random_caption(s, np.random.default_rng(2)).text for s in scenes]
    with torch.no_grad():
        for a, b in zip(model(scenes_to_tensor(scenes, cfg.model), tokenizer(texts))[:3], parallel(scenes_to_tensor(scenes, cfg.model), tokenizer(texts))[:3]):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def test_truthful_loss_is_plain_clip_when_only_the_diagonal_is_positive():
    torch.manual_seed(3)
    image = torch.nn.functional.normalize(torch.randn(7, 5), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(7, 5), dim=-1)
    scale = torch.tensor(9.0)
    plain = contrastive_loss(image, text, scale)
    torch.testing.assert_close(contrastive_loss(image, text, scale, torch.eye(7, dtype=torch.bool)), plain)
    # text 0 also describes image 3 (and image 3's text set grows accordingly): target mass split evenly
    positives = torch.eye(7, dtype=torch.bool)
    positives[0, 3] = True
    logits = scale * image @ text.T
    t2i = torch.log_softmax(logits.T, dim=1)
    i2t = torch.log_softmax(logits, dim=1)
    text_terms = [-(t2i[0, 0] + t2i[0, 3]) / 2] + [-t2i[t, t] for t in range(1, 7)]
    image_terms = [-i2t[i, i] for i in range(7)]
    image_terms[3] = -(i2t[3, 3] + i2t[3, 0]) / 2
    expected = 0.5 * (torch.stack(text_terms).mean() + torch.stack(image_terms).mean())
    torch.testing.assert_close(contrastive_loss(image, text, scale, positives), expected)


@pytest.mark.slow
def test_worker_errors_reach_the_caller(tmp_path):
    """A worker's error (here: rank 0 refusing another configuration's checkpoint) is raised in the
    calling process, and no worker is left running."""
    import multiprocessing

    def stop_at_6(record):
        if record.get("step") == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(steps=8, batch_size=16, log_every=1, checkpoint_every=4), tmp_path / "w.safetensors", log=stop_at_6, progress=False)
    assert (tmp_path / "w.safetensors.ckpt").exists()
    with pytest.raises(InputError, match="different configuration"):
        train(tiny_config(steps=8, batch_size=16, log_every=1, checkpoint_every=4, workers=2), tmp_path / "w.safetensors", progress=False)
    assert not multiprocessing.active_children()


def test_conv_stem_replaces_the_patch_embedding_shape_for_shape():
    from gradeclip.synth.model import DEFAULT_CONFIG, ConvStem

    model = build_model(DEFAULT_CONFIG)
    stem = model.visual.conv1
    assert isinstance(stem, ConvStem) and stem.weight is stem.proj.weight
    x = torch.randn(2, 3, 64, 48)
    assert stem(x).shape == (2, 128, 8, 6)
    # a token sees only its neighbourhood: changing a far pixel leaves the token unchanged
    y = x.clone()
    y[:, :, 40:, 40:] += 1
    torch.testing.assert_close(stem(y)[:, :, :3, :3], stem(x)[:, :, :3, :3], rtol=0, atol=0)
    with pytest.raises(InputError, match="conv stem"):
        ConvStem(64, 16)
    with pytest.raises(InputError, match="vision_stem"):
        build_model({**DEFAULT_CONFIG, "vision_stem": "resnet"})
