"""``gradeclip explain`` end to end on small real photos, in all three input formats: every stored
map equals what the Explainer gives for that image and text, broken images are recorded with
their reason, reruns resume, and a store made with other settings is refused."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_clip
from PIL import Image
from reference_eval import MARGIN

import gradeclip
from gradeclip.cli import main
from gradeclip.data import FolderSource, TarSource, decode_image
from gradeclip.distributed import Ranks
from gradeclip.image_inputs import DIM, overlay_original
from gradeclip.pipeline import ExplainJob, _work
from gradeclip.targets import explain_subsets
from gradeclip.zeroshot import classifier

TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 3, "head_width": 16, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 3},
}
BROKEN = {"empty.jpg": "empty file (0 bytes)", "junk.png": "not a recognised image format", "trunc.jpg": "truncated or corrupt image data"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """The tiny test CLIP saved the way open_clip models are published: config + safetensors."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("tiny-model")
    torch.manual_seed(1234)
    model = tiny_clip()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CONFIG, "preprocess_cfg": {}}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "open_clip_model.safetensors")
    return folder


@pytest.fixture(scope="module")
def loaded(model_dir):
    return gradeclip.load(f"local-dir:{model_dir}")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Six real photos (scikit-image), shrunk, with caption files, plus three broken files."""
    import skimage.data as sd

    folder = tmp_path_factory.mktemp("photos")
    (folder / "more").mkdir()
    arrays = {"astronaut": sd.astronaut(), "cat": sd.chelsea(), "coffee": sd.coffee(), "rocket": sd.rocket(), "camera": sd.camera(), "motorcycle": sd.stereo_motorcycle()[0]}
    for i, (name, array) in enumerate(arrays.items()):
        image = Image.fromarray(array).convert("RGB")
        image = image.resize((72, round(72 * image.height / image.width)), Image.Resampling.BILINEAR)
        where = folder if i % 2 else folder / "more"
        image.save(where / f"{name}.{'png' if i == 3 else 'jpg'}")
        (where / f"{name}.txt").write_text(f"a photo of a {name}\n")
    good = (folder / "cat.jpg").read_bytes()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "junk.png").write_bytes(b"this is not an image")
    (folder / "trunc.jpg").write_bytes(good[: len(good) // 3])
    return folder


def run_cli(*args: str) -> int:
    return main(["explain", "--quiet", *args])


def direct(loaded, path: str, texts) -> gradeclip.ImageExplanation:
    """The Explainer's own explanation of one image file against ``texts``."""
    model, preprocess, tokenizer = loaded
    image = preprocess(decode_image(Path(path).read_bytes()))[None]
    return gradeclip.Explainer(model, tokenizer).explain_image(image, texts)


def cosines(model, images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
    """The model's own score ``[B, T]``, computed without gradeclip: cos(encode_image, text
    embedding) for preprocessed ``images`` and unit ``texts`` ``[T, E]``."""
    with torch.no_grad():
        return F.normalize(model.encode_image(images).float(), dim=-1) @ texts.T


def text_embeddings(model, tokenizer, texts: list[str]) -> torch.Tensor:
    with torch.no_grad():
        return F.normalize(model.encode_text(tokenizer(texts)).float(), dim=-1)


def assert_valid_top(scores: torch.Tensor, picked: list[int]) -> None:
    """``picked`` is a top-``len(picked)`` of ``scores`` in descending order, up to ``MARGIN`` (the
    float noise of cosines computed in batches of other shapes): each picked class scores at
    least the next one and every class left out, less the margin."""
    values = scores.double()
    ordered = values[picked]
    assert (ordered[1:] <= ordered[:-1] + MARGIN).all(), (picked, ordered.tolist())
    left_out = torch.ones(len(values), dtype=torch.bool)
    left_out[picked] = False
    assert (values[left_out] <= ordered[-1] + MARGIN).all(), (picked, values.tolist())


def assert_map_close(stored: np.ndarray, expected: torch.Tensor) -> None:
    expected = expected.numpy()
    np.testing.assert_allclose(stored, expected, rtol=2e-3, atol=2e-3 * float(np.abs(expected).max()) + 1e-7)


def check_failures(store: gradeclip.Store) -> None:
    frame = store.to_pandas()
    for name, reason in BROKEN.items():
        rows = frame[frame["path"].str.endswith(name)]
        assert len(rows) == 1 and rows["status"].iloc[0] == "error" and rows["error"].iloc[0].startswith(reason), name


def test_folder_pairs_match_the_explainer(tmp_path, model_dir, loaded, photos):
    out = tmp_path / "store"
    # groups of at most 2 captions per model call, 2 workers, chunks of 4: every path is exercised
    assert run_cli("--model", str(model_dir), "--data", str(photos), "--out", str(out), "--batch-size", "3", "--shard-size", "4", "--workers", "2", "--max-targets", "2") == 0
    store = gradeclip.Store(out)
    frame = store.to_pandas()
    assert sorted(frame["key"]) == sorted(FolderSource(photos).samples(0, 9)[i].key for i in range(9))
    assert store.manifest["counts"] == {"chunks": 3, "rows": 9, "ok": 6, "errors": 3, "samples": 9, "failed_samples": 3}
    assert store.manifest["config"]["mode"] == "pairs" and store.manifest["complete"]
    check_failures(store)
    for row in np.flatnonzero(frame["status"] == "ok"):
        values = frame.iloc[row]
        assert values["text"] == f"a photo of a {Path(values['key']).stem}"
        ref = direct(loaded, values["path"], [values["text"]])
        assert (values["height"], values["width"]) == (4, 4) and (values["input_height"], values["input_width"]) == (32, 32)
        assert_map_close(store.map(row), ref.maps[0, 0])
        assert values["score"] == pytest.approx(ref.scores[0, 0].item(), abs=1e-5)
        model, preprocess, tokenizer = loaded
        image = preprocess(decode_image(Path(values["path"]).read_bytes()))[None]
        own = cosines(model, image, text_embeddings(model, tokenizer, [values["text"]]))
        assert values["model_score"] == pytest.approx(own.item(), abs=1e-5)
        with Image.open(values["path"]) as image:
            assert (values["image_width"], values["image_height"]) == image.size


def test_overlays_and_text_maps(tmp_path, model_dir, loaded, photos):
    out = tmp_path / "store"
    args = ["--model", str(model_dir), "--data", str(photos), "--out", str(out), "--workers", "0", "--batch-size", "4", "--max-targets", "3"]
    assert run_cli(*args, "--overlays", "--colormap", "viridis", "--alpha", "0.4", "--text-maps", "--text-layers", "2") == 0
    store = gradeclip.Store(out)
    frame = store.to_pandas()
    model, preprocess, tokenizer = loaded
    explainer = gradeclip.Explainer(model, tokenizer)
    ok = np.flatnonzero(frame["status"] == "ok")
    assert len(ok) == 6 and frame.loc[frame["status"] == "error", "overlay"].isna().all()
    for row in ok:
        values = frame.iloc[row]
        original = np.asarray(decode_image(Path(values["path"]).read_bytes()))
        with Image.open(out / values["overlay"]) as drawn:  # over the original at its own size, as the API draws it
            drawn = np.asarray(drawn)
        mapping = explainer.explain_image(original, [values["text"]]).inputs[0].mapping
        np.testing.assert_array_equal(drawn, overlay_original(original, store.map(row), mapping, alpha=0.4, colormap="viridis"))
        height, width = original.shape[:2]
        dimmed = (original.astype(np.float32) * DIM + 0.5).astype(np.uint8)
        if width != height:  # the centre crop cut the long side's ends away
            edge = (slice(None), slice(0, 2)) if width > height else (slice(0, 2), slice(None))
            np.testing.assert_array_equal(drawn[edge], dimmed[edge])
        middle = (slice(height // 2 - 2, height // 2 + 2), slice(width // 2 - 2, width // 2 + 2))
        assert not np.array_equal(drawn[middle], dimmed[middle])
        image = preprocess(decode_image(Path(values["path"]).read_bytes()))[None]
        words = explainer.explain_text(image, [values["text"]], n_layers=2).words(0, 0)
        assert list(values["words"]) == [w for w, _ in words] == values["text"].split()
        np.testing.assert_allclose(values["word_importance"], [v for _, v in words], atol=1e-5)


def test_table_zero_shot_with_labels(tmp_path, model_dir, loaded, photos):
    classes = ["cat", "rocket", "cup of coffee", "astronaut", "camera"]
    (tmp_path / "classes.txt").write_text("\n".join(classes) + "\n")
    rows = [("cat.jpg", "cat"), ("more/coffee.jpg", "2"), ("rocket.png", "Rocket"), ("more/astronaut.jpg", "zebra"), ("junk.png", "cat"), ("missing.jpg", "cat")]
    with open(tmp_path / "t.csv", "w", newline="") as f:
        csv.writer(f).writerows([("image", "label"), *rows])
    out = tmp_path / "store"
    args = ["--model", str(model_dir), "--data", str(tmp_path / "t.csv"), "--images-root", str(photos), "--out", str(out)]
    assert run_cli(*args, "--classnames", str(tmp_path / "classes.txt"), "--templates", "simple", "--top-k", "2", "--workers", "0", "--max-targets", "3") == 0
    store = gradeclip.Store(out)
    frame = store.to_pandas()
    model, preprocess, tokenizer = loaded
    explainer = gradeclip.Explainer(model, tokenizer)
    from gradeclip.zeroshot import templates

    bank = classifier(explainer, classes, templates("simple"))
    truth = {"0": 0, "1": 2, "2": 1, "3": None}
    for key in ("0", "1", "2", "3"):
        sample = frame[frame["key"] == key]
        ok = sample[sample["status"] == "ok"]
        path = ok["path"].iloc[0]
        with torch.no_grad():
            image = preprocess(decode_image(Path(path).read_bytes()))[None]
            feature = model.encode_image(image).float()
        scores = (feature / feature.norm(dim=-1, keepdim=True) @ bank.T)[0]
        ranked = ok[ok["prediction_rank"].notna()]
        top = ranked["text_index"].astype(int).tolist()  # the run's top 2, valid for these scores:
        assert_valid_top(scores, top)
        assert ranked["prediction_rank"].tolist() == [1, 2]
        if truth[key] is None:
            assert sample[sample["status"] == "error"]["error"].iloc[0] == "label 'zebra' names no class"
        else:
            assert ok[ok["is_label"]]["text_index"].tolist() == [truth[key]]
            assert len(ok) == (2 if truth[key] in top else 3)
        ref = explainer.explain_image(image, bank[ok["text_index"].astype(int).tolist()])
        for j, row in enumerate(ok.index):
            assert_map_close(store.map(row), ref.maps[0, j])
            assert ok["model_score"].iloc[j] == pytest.approx(scores[int(ok["text_index"].iloc[j])].item(), abs=1e-5)
    assert frame[frame["key"] == "4"]["error"].iloc[0].startswith("not a recognised image format")
    assert frame[frame["key"] == "5"]["error"].iloc[0] == "cannot read file: No such file or directory"


def write_shards(folder: Path, photos: Path, truncate_last: bool) -> list[str]:
    """Two img2dataset-style shards of the photos (and the broken files); the second one cut short."""
    files = sorted(p for p in photos.rglob("*") if p.is_file() and p.suffix != ".txt")
    folder.mkdir()
    keys = []
    for s in range(2):
        with tarfile.open(folder / f"{s:05d}.tar", "w") as tar:
            for i, path in enumerate(files[s::2]):
                key = f"{s:05d}{i:04d}"
                keys.append(key)
                for name, data in ((f"{key}{path.suffix}", path.read_bytes()), (f"{key}.txt", path.stem.encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    if truncate_last:
        shard = folder / "00001.tar"
        with tarfile.open(shard) as tar:
            last = tar.getmembers()[-2]  # the last image
        shard.write_bytes(shard.read_bytes()[: last.offset_data + last.size // 2])
        keys.pop()
    return keys


def test_tar_shared_texts(tmp_path, model_dir, loaded, photos):
    keys = write_shards(tmp_path / "shards", photos, truncate_last=True)
    texts = ["a cat", "a rocket", "a cup of coffee"]
    out = tmp_path / "store"
    assert run_cli("--model", str(model_dir), "--data", str(tmp_path / "shards" / "{00000..00001}.tar"), "--out", str(out), "--texts", *texts, "--shard-size", "2", "--batch-size", "4", "--workers", "2") == 0
    store = gradeclip.Store(out)
    frame = store.to_pandas()
    shard_error = frame[frame["key"] == "00001.tar"]
    assert len(shard_error) == 1 and "unreadable after 3 samples" in shard_error["error"].iloc[0]
    samples = frame[frame["key"] != "00001.tar"]
    assert sorted(set(samples["key"])) == sorted(keys)
    ok = samples[samples["status"] == "ok"]
    assert len(ok) == 3 * (len(keys) - 3) and set(ok["text"]) == set(texts)
    for row in ok.index[:6]:
        values = frame.loc[row]
        shard, member = values["path"].split("#")
        with tarfile.open(shard) as tar:
            data = tar.extractfile(member).read()
        model, preprocess, tokenizer = loaded
        image = preprocess(decode_image(data))[None]
        ref = gradeclip.Explainer(model, tokenizer).explain_image(image, texts)
        assert_map_close(store.map(row), ref.maps[0, int(values["text_index"])])


def test_rerun_resumes_and_other_settings_are_refused(tmp_path, model_dir, photos, capsys):
    out = tmp_path / "store"
    args = ["--model", str(model_dir), "--data", str(photos), "--out", str(out), "--texts", "a photo", "--shard-size", "3", "--workers", "0"]
    assert run_cli(*args) == 0
    parts = {p: p.stat().st_mtime_ns for p in (out / "parts").iterdir()}
    (out / "parts" / "c0000001.parquet").unlink()  # as if killed before this chunk finished
    assert run_cli(*args) == 0
    assert "9 samples" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in (out / "parts").iterdir() if p.name != "c0000001.parquet"} == {p: t for p, t in parts.items() if p.name != "c0000001.parquet"}
    assert len(gradeclip.Store(out)) == 9
    assert run_cli(*args, "--heads", "model") == 2
    assert "different settings" in capsys.readouterr().err
    assert run_cli(*args, "--heads", "model", "--overwrite") == 0
    assert gradeclip.Store(out).manifest["config"]["options"] == {"heads": "model"}


def test_refused_before_any_work(tmp_path, model_dir, photos, capsys):
    out = tmp_path / "store"
    assert run_cli("--model", str(model_dir), "--data", str(photos), "--out", str(out), "--texts", "a photo", "--option", "bogus=1") == 2
    assert "no option 'bogus'" in capsys.readouterr().err
    assert not list((out / "parts").glob("*"))
    (tmp_path / "t.csv").write_text("image\ncat.jpg\n")
    assert run_cli("--model", str(model_dir), "--data", str(tmp_path / "t.csv"), "--out", str(tmp_path / "s2")) == 2
    assert "has no captions" in capsys.readouterr().err
    assert run_cli("--model", str(model_dir), "--data", str(photos), "--out", str(tmp_path / "s3"), "--text-maps", "--text-layers", "8") == 2
    assert "text_layers (--text-layers) must be in 1..3, the text tower's blocks; got 8" in capsys.readouterr().err
    assert not (tmp_path / "s3").exists()  # checked before the store is made
    assert run_cli("--model", str(model_dir), "--data", str(photos), "--out", str(tmp_path / "s4"), "--classnames", "--text-maps") == 2
    assert "zero-shot classes are averages" in capsys.readouterr().err


def explain_parser():
    """The ``explain`` subcommand's parser, as ``gradeclip`` registers it."""
    from gradeclip.cli import build_parser

    return next(a for a in build_parser()._actions if a.dest == "command").choices["explain"]


def test_every_flag_default_is_the_jobs():
    """The command's defaults are ExplainJob's: one declaration, checked flag by flag."""
    import dataclasses

    jobs = {f.name: f for f in dataclasses.fields(ExplainJob)}
    flags = {a.dest: a for a in explain_parser()._actions if a.dest in jobs}
    assert len(flags) >= 25
    for name, action in flags.items():
        field = jobs[name]
        if field.default is not dataclasses.MISSING:
            assert action.default == field.default, name
        else:  # required, or a default that depends on the machine: the flag must not set one
            assert action.default is None, name
    assert flags["workers"].default is None and jobs["workers"].default_factory() == min(8, os.cpu_count() or 1)


@pytest.mark.parametrize("extra", [[], ["--classnames", "CLASSES"], ["--texts", "a cat", "a dog"]], ids=["pairs", "zeroshot", "texts"])
def test_a_job_from_the_command_line_is_the_python_default(tmp_path, extra):
    """``gradeclip explain`` with only the required flags runs the job the Python API runs with
    only the required arguments (before: zero-shot templates resolved by the command, None in the job)."""
    from gradeclip.commands.explain import job_from_args

    classes = tmp_path / "classes.txt"
    classes.write_text("cat\ndog\n")
    extra = [str(classes) if e == "CLASSES" else e for e in extra]
    job = job_from_args(explain_parser().parse_args(["--model", "m", "--data", "d", "--out", "o", *extra]))
    kwargs = {"classnames": ["cat", "dog"]} if "--classnames" in extra else {"texts": ["a cat", "a dog"]} if extra else {}
    assert job == ExplainJob(model="m", data="d", out="o", **kwargs)


def test_every_offered_choice_is_accepted_by_the_job():
    choices = {a.dest: a.choices for a in explain_parser()._actions if a.choices and a.dest in ("precision", "colormap", "compat")}
    assert set(choices) == {"precision", "colormap", "compat"}
    for name, values in choices.items():
        for value in values:
            ExplainJob(model="m", data="d", out="o", **{name: value}).check()


def test_explain_subsets_matches_one_call_per_image(tiny_model, tokenizer):
    explainer = gradeclip.Explainer(tiny_model, tokenizer)
    images = torch.randn(7, 3, 32, 32)
    bank = torch.nn.functional.normalize(torch.randn(9, 32), dim=-1)
    rng = random.Random(0)
    wanted = [rng.sample(range(9), rng.randint(1, 4)) for _ in range(7)]
    got = explain_subsets(explainer, images, wanted, bank, max_targets=5, method="gradeclip", options={"heads": "model"})
    for i, (maps, scores, model_scores) in enumerate(got):
        ref = explainer.explain_image(images[i : i + 1], bank[wanted[i]], heads="model")
        assert maps.shape == (len(wanted[i]), 4, 4)
        assert_map_close(maps.astype(np.float32), ref.maps[0])
        # with heads="model" both scores are the model's cosine: check them against one computed
        # without gradeclip (the Explainer's own model_scores are the same tensor as its scores)
        own = cosines(tiny_model, images[i : i + 1], bank[wanted[i]])[0].numpy()
        np.testing.assert_allclose(scores, own, atol=1e-6, rtol=0)
        np.testing.assert_allclose(model_scores, own, atol=1e-6, rtol=0)


def test_ranks_split_the_work_disjointly(tmp_path, photos):
    keys = write_shards(tmp_path / "shards", photos, truncate_last=False)
    assert len(keys) == 9
    job = ExplainJob(model="m", data="d", out="o", shard_size=2, batch_size=1)
    folder = FolderSource(photos)
    plans = [_work(folder, job, Ranks(r, 3, torch.device("cpu")), {}, lambda x: x)[0].plan for r in range(3)]  # type: ignore[attr-defined]
    positions = [(start, stop) for plan in plans for _, _, start, stop, _ in plan]
    assert sorted(positions) == [(i, i + 1) for i in range(9)]
    done = {"c0000001": False}
    resumed = [_work(folder, job, Ranks(r, 3, torch.device("cpu")), done, lambda x: x) for r in range(3)]
    assert [todo for _, _, todo, _ in resumed] == [4, 1, 2] and [r[3] for r in resumed] == [0, 1, 0]  # chunks (2,2,2,2,1) → ranks 0,1,2,0,1
    tars = TarSource(str(tmp_path / "shards"))
    shards = [_work(tars, job, Ranks(r, 2, torch.device("cpu")), {"s000001-00000": False, "s000001-00001": True}, lambda x: x)[0] for r in range(2)]
    assert [s.shards for s in shards] == [[0], []]  # shard 1 finished (its last chunk says so)


def test_bench_command_reports_the_three_rates(model_dir, capsys):
    assert main(["bench", "--model", str(model_dir), "--images", "6", "--batch-size", "4", "--workers", "1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "logical cores" in out and "torch threads" in out
    for name in ("encode_image (in memory", "explain_image (in memory)", "gradeclip explain pipeline"):
        line = next(line for line in out.splitlines() if name in line)
        assert float(line.split("|")[2]) > 0


def subprocess_env() -> dict[str, str]:
    """This process's environment (with the suite's OMP_NUM_THREADS, see conftest) and this
    checkout's package first on the path."""
    env = dict(os.environ)
    package_root = str(Path(gradeclip.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([package_root, env.get("PYTHONPATH", "")])
    return env


def store_content(root: Path) -> tuple[list[tuple], np.ndarray, np.ndarray]:
    store = gradeclip.Store(root)
    frame = store.to_pandas()
    columns = ["key", "path", "text", "status", "error", "chunk", "position", "shard", "offset", "height", "width"]
    rows = [tuple(None if (isinstance(v, float) and np.isnan(v)) else v for v in r) for r in frame[columns].itertuples(index=False)]
    ok = np.flatnonzero(frame["status"] == "ok")
    return rows, frame[["score", "model_score"]].to_numpy(dtype=np.float64), store.maps(ok)


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tmp_path, model_dir, photos):
    args = ["--model", str(model_dir), "--data", str(photos), "--texts", "a photo", "a cat", "--shard-size", "2", "--batch-size", "2", "--workers", "1"]
    assert run_cli(*args, "--out", str(tmp_path / "one")) == 0
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "gradeclip", "explain", "--quiet", *args, "--out", str(tmp_path / "two")]
    done = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert gradeclip.Store(tmp_path / "two").manifest["run"]["world_size"] == 2
    assert "this run: 9 samples done (6 explained, 3 failed)" in done.stdout  # both ranks' work, not rank 0's share
    one, two = store_content(tmp_path / "one"), store_content(tmp_path / "two")
    assert one[0] == two[0]
    np.testing.assert_allclose(one[1], two[1], atol=1e-5)
    np.testing.assert_allclose(one[2], two[2], rtol=2e-3, atol=1e-6)


def assert_nothing_looks_complete_but_is_not(root: Path) -> None:
    """Every part and map shard under their final names is whole; anything else is a temporary."""
    import pyarrow.parquet as pq

    for part in (root / "parts").glob("*.parquet"):
        table = pq.read_table(part)
        ok = [s == "ok" for s in table.column("status").to_pylist()]
        if any(ok):
            sizes = [h * w for h, w, good in zip(table.column("height").to_pylist(), table.column("width").to_pylist(), ok) if good]
            assert np.load(root / "maps" / f"{part.stem}.npy").shape == (sum(sizes),)
    names = {p.name for p in root.rglob("*") if p.is_file()}
    for name in names:
        assert name.endswith((".parquet", ".npy", ".json")) or ".tmp-" in name, name


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume(tmp_path, model_dir, photos):
    """Kill the run (with its DataLoader worker) at random moments, three times; the final resume
    explains every input exactly once and the store equals an uninterrupted run's."""
    data = tmp_path / "data"
    copies = 4  # 36 samples (the photos and broken files four times over) in 18 chunks
    for i in range(copies):
        for path in photos.rglob("*"):
            if path.is_file():
                target = data / f"copy{i}" / path.relative_to(photos)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(path.read_bytes())
    args = ["--model", str(model_dir), "--data", str(data), "--texts", "a photo", "--shard-size", "2", "--batch-size", "1", "--workers", "1"]
    assert run_cli(*args, "--out", str(tmp_path / "reference")) == 0
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "gradeclip", "explain", "--quiet", *args, "--out", str(out)]

    def chunks_done() -> int:
        return len(list((out / "parts").glob("*.parquet"))) if (out / "parts").is_dir() else 0

    rng = random.Random(9)
    log = tmp_path / "stderr.log"
    for attempt in range(4):
        before = chunks_done()
        with open(log, "wb") as err:
            process = subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        if attempt < 3:  # first while starting up or on the first chunks, then in the middle of the work
            # kill while at least two thirds of the remaining chunks are still to do, so that even
            # a fast machine cannot finish the run first
            target = before + (0 if attempt == 0 else rng.randrange(1, max(2, (9 * copies // 2 - before) // 3)))
            while process.poll() is None and not ((out / "manifest.json").exists() and chunks_done() >= target):
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.03))
            assert process.poll() is None, "the run finished before it could be killed"
            os.killpg(process.pid, signal.SIGKILL)
            assert process.wait(timeout=60) == -signal.SIGKILL
            assert_nothing_looks_complete_but_is_not(out)
        else:
            assert process.wait(timeout=300) == 0, log.read_text()[-3000:]
    reference, resumed = store_content(tmp_path / "reference"), store_content(out)
    keys = [row[0] for row in resumed[0]]
    assert len(keys) == len(set(keys)) == 9 * copies
    assert reference[0] == resumed[0]
    np.testing.assert_allclose(reference[1], resumed[1], atol=1e-5)
    np.testing.assert_allclose(reference[2], resumed[2], rtol=2e-3, atol=1e-6)


def test_native_resolution_matches_the_api_per_image(tmp_path, model_dir, loaded):
    """``--resolution native``: images of several sizes in one batch are explained in groups of one
    input size; each row's map, score, input size and overlay are the API's
    ``explain_image(path, resolution="native", max_short_side=...)`` for that image alone."""
    import skimage.data as sd

    photo = sd.astronaut()
    folder = tmp_path / "sizes"
    folder.mkdir()
    # native sizes (patch 8, short side capped at 48): 40×56, 40×56, 64×48, 48×72, 32×88
    for name, (h, w) in {"a": (40, 57), "b": (41, 55), "c": (66, 47), "d": (100, 150), "e": (33, 90)}.items():
        Image.fromarray(photo[:h * 3:3, 100 : 100 + w * 2 : 2]).save(folder / f"{name}.png")
    out = tmp_path / "store"
    texts = ["a photo of an astronaut", "a red flag"]
    args = ["--model", str(model_dir), "--data", str(folder), "--out", str(out), "--texts", *texts, "--batch-size", "4", "--workers", "1"]
    assert run_cli(*args, "--resolution", "native", "--max-short-side", "48", "--overlays") == 0
    store = gradeclip.Store(out)
    frame = store.to_pandas()
    assert str(frame["input_height"].dtype) == "Int64" and (frame["status"] == "ok").all() and len(frame) == 10
    assert store.manifest["config"]["resolution"] == "native" and store.manifest["config"]["max_short_side"] == 48
    model, _, tokenizer = loaded
    explainer = gradeclip.Explainer(model, tokenizer)
    sizes = set()
    for row in range(len(frame)):
        values = frame.iloc[row]
        ref = explainer.explain_image(values["path"], [values["text"]], resolution="native", max_short_side=48)
        mapping = ref.inputs[0].mapping
        sizes.add(mapping.input_size)
        assert (values["input_height"], values["input_width"]) == mapping.input_size
        assert_map_close(store.map(row), ref.maps[0, 0])
        assert store.upsampled(row).shape == mapping.input_size
        assert values["score"] == pytest.approx(ref.scores[0, 0].item(), abs=1e-5)
        original = np.asarray(decode_image(Path(values["path"]).read_bytes()))
        with Image.open(out / values["overlay"]) as drawn:
            np.testing.assert_array_equal(np.asarray(drawn), overlay_original(original, store.map(row), mapping))
    assert sizes == {(40, 56), (64, 48), (48, 72), (32, 88)}


def test_native_resolution_refusals(tmp_path, model_dir, photos, capsys):
    """A tower fixed to its input size is refused naming --resolution and why; --max-short-side
    without --resolution native is refused before anything loads."""
    import open_clip
    from tiny_models import tiny_eva02

    assert run_cli("--model", str(model_dir), "--data", str(photos), "--out", str(tmp_path / "s1"), "--max-short-side", "64") == 2
    assert "max_short_side (--max-short-side) caps native-resolution inputs" in capsys.readouterr().err
    assert not (tmp_path / "s1").exists()
    loaded = (tiny_eva02(), open_clip.image_transform(32, is_train=False), open_clip.get_tokenizer("ViT-B-32"))
    job = ExplainJob(model="eva", data=str(photos), out=str(tmp_path / "s2"), texts=["a cat"], resolution="native", workers=0, progress=False)
    with pytest.raises(gradeclip.UnsupportedModelError, match=r"--resolution native: .* only its own input size 32×32 \(its rotary position embedding.*use --resolution model"):
        gradeclip.explain_dataset(job, loaded=loaded)
    assert not (tmp_path / "s2").exists()
