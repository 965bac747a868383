"""Input sources: folders, tables and tar shards list the right samples, in a stable order, and
report broken inputs with a reason instead of stopping."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gradeclip.data import FolderSource, TableSource, TarSource, UnreadableImage, decode_image, open_source
from gradeclip.data.tars import split_key
from gradeclip.errors import InputError


def jpeg(seed: int, size: tuple[int, int] = (20, 14)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_decode_reasons():
    image = decode_image(jpeg(0))
    assert image.mode == "RGB" and image.size == (20, 14)
    good = jpeg(1, (64, 64))
    cases = {
        b"": r"empty file \(0 bytes\)",
        b"hello, not an image": "not a recognised image format",
        good[: len(good) // 2]: "truncated or corrupt image data",
    }
    for data, reason in cases.items():
        with pytest.raises(UnreadableImage, match=reason):
            decode_image(data)


def test_folder_lists_images_recursively_in_sorted_order(tmp_path):
    (tmp_path / "b" / "deep").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "store").mkdir()
    for name in ("b/deep/x.JPG", "a.png", "b/c.jpeg", ".hidden/h.jpg", ".dot.jpg", "store/s.jpg", "notes.txt", "README"):
        (tmp_path / name).write_bytes(jpeg(len(name)))
    (tmp_path / "a.txt").write_text("  a caption \n")
    source = FolderSource(tmp_path, exclude=tmp_path / "store")
    samples = source.samples(0, len(source))
    assert [s.key for s in samples] == ["a.png", "b/c.jpeg", "b/deep/x.JPG"]
    assert [s.caption for s in samples] == ["a caption", None, None]
    assert source.has_captions and all(s.label is None for s in samples)
    assert [s.index for s in samples] == [0, 1, 2]
    assert samples[2].path == str(tmp_path.resolve() / "b/deep/x.JPG")
    assert [s.key for s in source.samples(1, 3)] == ["b/c.jpeg", "b/deep/x.JPG"]
    before = source.fingerprint()
    assert FolderSource(tmp_path, exclude=tmp_path / "store").fingerprint() == before
    (tmp_path / "new.jpg").write_bytes(jpeg(9))
    assert FolderSource(tmp_path, exclude=tmp_path / "store").fingerprint() != before


def test_table_columns_paths_and_keys(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "001.jpg").write_bytes(jpeg(0))
    (tmp_path / "t.csv").write_text("filepath,caption,label\nimg/001.jpg,a red thing,3\n/abs/x.jpg,,\n")
    source = open_source(tmp_path / "t.csv")
    assert isinstance(source, TableSource) and source.columns["image"] == "filepath"
    a, b = source.samples(0, 2)
    assert (a.key, a.caption, a.label) == ("0", "a red thing", "3")
    assert a.path == str(tmp_path.resolve() / "img" / "001.jpg")  # "001" stays a string, relative to the table
    assert (b.key, b.path, b.caption, b.label) == ("1", "/abs/x.jpg", None, None)

    (tmp_path / "t.tsv").write_text("key\tpic\ttext\nk1\t001.jpg\tone\nk2\t002.jpg\ttwo\n")
    tsv = TableSource(tmp_path / "t.tsv", image_column="pic", images_root=tmp_path / "img")
    assert [(s.key, s.path, s.caption) for s in tsv.samples(0, 2)] == [
        ("k1", str(tmp_path.resolve() / "img/001.jpg"), "one"),
        ("k2", str(tmp_path.resolve() / "img/002.jpg"), "two"),
    ]


def test_parquet_table(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"image": ["a.jpg", "b.jpg"], "label": [7, 2]}), tmp_path / "t.parquet")
    source = open_source(tmp_path / "t.parquet")
    assert [s.label for s in source.samples(0, 2)] == ["7", "2"]
    assert not source.has_captions


@pytest.mark.parametrize(
    "content, message",
    [
        ("caption\nhello\n", "cannot tell which column holds the images"),
        ("image\nhttps://example.org/a.jpg\n", "URLs"),
        ("image,key\na.jpg,k\nb.jpg,k\n", "repeats keys"),
        ("", "empty"),
    ],
    ids=["no-image-column", "urls", "duplicate-keys", "empty"],
)
def test_table_errors(tmp_path, content, message):
    (tmp_path / "t.csv").write_text(content)
    with pytest.raises(InputError, match=message):
        TableSource(tmp_path / "t.csv")


def test_table_named_column_must_exist(tmp_path):
    (tmp_path / "t.csv").write_text("image\na.jpg\n")
    with pytest.raises(InputError, match="no caption column 'words'"):
        TableSource(tmp_path / "t.csv", caption_column="words")


def test_split_key_follows_webdataset():
    assert split_key("000123.jpg") == ("000123", "jpg")
    assert split_key("dir/a.b.seg.PNG") == ("dir/a", "b.seg.png")
    assert split_key("noext") is None


def test_tar_groups_members_by_key_and_reports_truncation(tmp_path):
    shard = tmp_path / "00000.tar"
    write_tar(shard, [("k0.jpg", jpeg(0)), ("k0.txt", b"first\n"), ("k0.cls", b"4"), ("k1.txt", b"no image"), ("k2.png", jpeg(1))])
    (tmp_path / "00000_stats.json").write_text('{"successes": 3}')
    source = open_source(str(tmp_path / "{00000..00000}.tar"))
    assert isinstance(source, TarSource) and source.shard_sizes() == [3]
    k0, k1, k2 = list(source.read_shard(0))
    assert (k0.key, k0.caption, k0.label, k0.path) == ("k0", "first", "4", f"{shard}#k0.jpg")
    assert decode_image(k0.data).size == (20, 14)
    assert k1.problem is not None and "no image" in k1.problem
    assert (k2.key, k2.caption) == ("k2", None)

    with tarfile.open(shard) as tar:
        last = tar.getmember("k2.png")
    broken = tmp_path / "broken" / "00001.tar"
    broken.parent.mkdir()
    broken.write_bytes(shard.read_bytes()[: last.offset_data + last.size // 2])  # cut inside k2.png
    items = list(TarSource(str(broken)).read_shard(0))
    assert [type(i).__name__ for i in items] == ["Sample", "Sample", "ShardError"]
    assert "unreadable after 2 samples" in items[-1].reason and "'k2'" in items[-1].reason


def test_tar_patterns(tmp_path):
    for i in range(3):
        write_tar(tmp_path / f"{i:05d}.tar", [(f"{i}.jpg", jpeg(i))])
    assert len(TarSource(str(tmp_path / "{00000..00002}.tar")).shards) == 3
    assert isinstance(open_source(tmp_path), TarSource)  # a folder of shards
    with pytest.raises(InputError, match="1 of 4 shards do not exist"):
        TarSource(str(tmp_path / "{00000..00003}.tar"))


def test_open_source_refuses_unknown(tmp_path):
    with pytest.raises(InputError, match="cannot tell what"):
        open_source(tmp_path / "nothing-here")
    with pytest.raises(InputError, match="format must be one of"):
        open_source(tmp_path, format="zip")


def test_decoder_turns_images_upright_by_their_exif_orientation(tmp_path):
    """The one decoder applies the EXIF orientation tag (6 = the camera was turned 90° clockwise:
    the stored pixels must be rotated 90° clockwise to be upright), for files and for bytes."""
    from gradeclip.data import load_image

    pixels = np.random.default_rng(3).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(tmp_path / "turned.png", exif=exif)
    upright = np.rot90(pixels, k=-1)  # 90° clockwise: [10, 6, 3]
    np.testing.assert_array_equal(load_image(tmp_path / "turned.png"), upright)
    np.testing.assert_array_equal(np.asarray(decode_image((tmp_path / "turned.png").read_bytes())), upright)
    Image.fromarray(pixels).convert("L").save(tmp_path / "grey.png")
    assert load_image(tmp_path / "grey.png").shape == (6, 10, 3)


def test_unreadable_files_raise_an_input_error_naming_them(tmp_path):
    from gradeclip.data import load_image, load_mask

    (tmp_path / "broken.png").write_bytes(b"not a png")
    for load in (load_image, load_mask):
        with pytest.raises(UnreadableImage, match="broken.png.*not a recognised image format") as info:
            load(tmp_path / "broken.png")
        assert isinstance(info.value, InputError)
    with pytest.raises(UnreadableImage, match="missing.png.*cannot read file"):
        load_image(tmp_path / "missing.png")


def test_folder_labels_from_class_folders_and_masks(tmp_path):
    """``labels="folders"``: int labels in sorted folder order (or a class index's order);
    ``masks=``: images pair with ``<rel>.png`` masks, the others are left out and counted."""
    for name in ("b_cls/1.jpg", "a_cls/2.jpg", "a_cls/1.jpg", "b_cls/sub/3.jpg"):
        (tmp_path / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "images" / name).write_bytes(jpeg(len(name)))
    for name in ("a_cls/1.png", "b_cls/sub/3.png"):
        (tmp_path / "masks" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.eye(4, dtype=np.uint8) * 255).save(tmp_path / "masks" / name)
    source = FolderSource(tmp_path / "images", labels="folders")
    samples = source.samples(0, len(source))
    assert [(s.key, s.label, s.index) for s in samples] == [("a_cls/1.jpg", 0, 0), ("a_cls/2.jpg", 0, 1), ("b_cls/1.jpg", 1, 2), ("b_cls/sub/3.jpg", 1, 3)]
    assert source.class_names == ["a cls", "b cls"]
    (tmp_path / "index.txt").write_text("b_cls bees\na_cls ants\n")
    indexed = FolderSource(tmp_path / "images", labels="folders", class_index=tmp_path / "index.txt")
    assert [s.label for s in indexed.samples(0, 4)] == [1, 1, 0, 0] and indexed.class_names == ["bees", "ants"]
    masked = FolderSource(tmp_path / "images", labels="auto", masks=tmp_path / "masks")
    assert [(s.key, s.mask) for s in masked.samples(0, len(masked))] == [
        ("a_cls/1.jpg", str((tmp_path / "masks/a_cls/1.png").resolve())),
        ("b_cls/sub/3.jpg", str((tmp_path / "masks/b_cls/sub/3.png").resolve())),
    ]
    assert masked.missing_masks == 2 and [s.label for s in masked.samples(0, 2)] == [0, 1]
    assert FolderSource(tmp_path / "images").fingerprint() != indexed.fingerprint()
    (tmp_path / "images" / "loose.jpg").write_bytes(jpeg(0))
    assert FolderSource(tmp_path / "images", labels="auto").class_names == []
    with pytest.raises(InputError, match="every image must sit in a class sub-folder"):
        FolderSource(tmp_path / "images", labels="folders")
    with pytest.raises(InputError, match="labels must be one of"):
        FolderSource(tmp_path / "images", labels="yes")


def test_one_column_rule_for_every_table_reader(tmp_path):
    """Explain's tables and the evaluation's caption tables pick columns the same way and say the same."""
    from gradeclip.eval import CaptionTable

    (tmp_path / "a.jpg").write_bytes(jpeg(0))
    (tmp_path / "t.csv").write_text("path,title,label\na.jpg,a cat,3\n")
    source, table = TableSource(tmp_path / "t.csv"), CaptionTable(tmp_path / "t.csv")
    assert source.columns["image"] == "path" and source.columns["caption"] == "title"
    assert [(s.key, s.caption, s.path) for s in table] == [("a.jpg", "a cat", source.samples(0, 1)[0].path)]
    (tmp_path / "u.csv").write_text("path,label\na.jpg,3\n")
    assert TableSource(tmp_path / "u.csv").columns["caption"] is None
    for read in (lambda: TableSource(tmp_path / "u.csv", require_captions=True), lambda: CaptionTable(tmp_path / "u.csv")):
        with pytest.raises(InputError, match="cannot tell which column holds the captions.*--caption-column"):
            read()
