"""Region classification and retrieval (SPEC §10, paper Tables VII and IX): RoI-align and mask
pooling against naive loops, COCO-format reading on tiny files written here, the synthetic
world's exact regions, recall@k."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from gradeclip.eval.regions import (
    ROI_OUTPUT,
    ROI_SAMPLES,
    RegionImage,
    box_embeddings,
    coco_regions,
    evaluate,
    mask_embeddings,
    recall_at,
    region_accuracy,
    synth_regions,
)


def test_gradeclip_eval_exposes_the_regions_task():
    import gradeclip.eval as ev

    assert "regions" in ev.__all__ and ev.regions.evaluate is evaluate


def _bilinear(grid, y, x):
    """torchvision's RoI-align sample of ``grid`` ``[h, w, E]`` at (y, x) in cell units."""
    h, w = grid.shape[:2]
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return torch.zeros(grid.shape[-1])
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    if y0 >= h - 1:
        y0 = y1 = h - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= w - 1:
        x0 = x1 = w - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return (1 - ly) * (1 - lx) * grid[y0, x0] + (1 - ly) * lx * grid[y0, x1] + ly * (1 - lx) * grid[y1, x0] + ly * lx * grid[y1, x1]


def _roi_reference(grid, box, patch):
    x1, y1, x2, y2 = (float(v) / patch - 0.5 for v in box)  # aligned=True: half-pixel offset
    bin_h, bin_w = (y2 - y1) / ROI_OUTPUT, (x2 - x1) / ROI_OUTPUT
    total = torch.zeros(grid.shape[-1])
    for ph in range(ROI_OUTPUT):
        for pw in range(ROI_OUTPUT):
            for iy in range(ROI_SAMPLES):
                for ix in range(ROI_SAMPLES):
                    y = y1 + ph * bin_h + (iy + 0.5) * bin_h / ROI_SAMPLES
                    x = x1 + pw * bin_w + (ix + 0.5) * bin_w / ROI_SAMPLES
                    total += _bilinear(grid, y, x)
    return total / (ROI_OUTPUT**2 * ROI_SAMPLES**2)


def test_box_embeddings_match_a_naive_roi_align():
    torch.manual_seed(0)
    dense = torch.randn(2, 5, 7, 3)  # non-square grid, patch 8 → 40×56 px
    boxes = [torch.tensor([[0.0, 0.0, 56.0, 40.0], [3.5, 10.0, 20.0, 39.0]]), torch.tensor([[50.0, 1.0, 56.0, 9.0]])]
    out = box_embeddings(dense, boxes, 8)
    expected = [_roi_reference(dense[b], box, 8) for b in range(2) for box in boxes[b]]
    torch.testing.assert_close(out, torch.stack(expected), rtol=1e-5, atol=1e-6)


def test_mask_embeddings_match_a_naive_area_weighted_mean():
    torch.manual_seed(1)
    dense = torch.randn(3, 4, 5)
    masks = torch.rand(2, 12, 16) > 0.6  # 4×4 px per cell
    out = mask_embeddings(dense, masks)
    for m in range(2):
        num, den = torch.zeros(5), 0.0
        for i in range(3):
            for j in range(4):
                frac = float(masks[m, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4].float().mean())
                num += frac * dense[i, j]
                den += frac
        torch.testing.assert_close(out[m], num / den, rtol=1e-5, atol=1e-6)


def test_recall_at_matches_a_naive_ranking():
    torch.manual_seed(2)
    img, txt = F.normalize(torch.randn(9, 4), dim=-1), F.normalize(torch.randn(9, 4), dim=-1)
    out = recall_at(img, txt, ks=(1, 3))
    sims = (txt @ img.T).tolist()
    for name, matrix in (("t2i", sims), ("i2t", [list(r) for r in zip(*sims)])):
        for k in (1, 3):
            hits = [sorted(range(9), key=lambda j: -row[j]).index(i) < k for i, row in enumerate(matrix)]
            assert out[name][f"r{k}"] == pytest.approx(np.mean(hits))


def test_synth_regions_are_the_exact_objects():
    items = list(synth_regions(5, lambda im: torch.zeros(3, 64, 64)))
    from gradeclip.synth import make_scene
    from gradeclip.synth.world import ALL_PAIRS

    for i, item in enumerate(items):
        scene = make_scene(i, "test", 0)
        assert torch.equal(item.things, torch.from_numpy(scene.masks))
        assert item.box_labels == [ALL_PAIRS.index((o.colour, o.shape)) for o in scene.objects]
        for box, mask in zip(item.boxes, scene.masks):
            x1, y1, x2, y2 = (int(v) for v in box)
            assert mask[y1:y2, x1:x2].sum() == mask.sum()  # the box holds the whole mask
            assert mask[y1, x1:x2].any() and mask[y2 - 1, x1:x2].any() and mask[y1:y2, x1].any() and mask[y1:y2, x2 - 1].any()


def _coco(tmp_path):
    from pycocotools import mask as mask_utils

    Image.new("RGB", (40, 20), (90, 20, 20)).save(tmp_path / "one.png")
    Image.new("RGB", (20, 20), (20, 90, 20)).save(tmp_path / "two.png")
    rle_mask = np.zeros((20, 20), dtype=np.uint8, order="F")
    rle_mask[10:20, 0:10] = 1
    rle = mask_utils.encode(rle_mask)
    rle["counts"] = rle["counts"].decode()
    instances = {
        "images": [{"id": 1, "file_name": "one.png", "width": 40, "height": 20}, {"id": 2, "file_name": "two.png", "width": 20, "height": 20}],
        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [0, 0, 20, 10], "area": 200, "iscrowd": 0, "segmentation": [[0, 0, 20, 0, 20, 10, 0, 10]]},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [0, 0, 40, 20], "area": 800, "iscrowd": 1, "segmentation": rle},
            {"id": 3, "image_id": 2, "category_id": 3, "bbox": [0, 10, 10, 10], "area": 100, "iscrowd": 0, "segmentation": rle},
        ],
    }
    stuff = {"images": instances["images"], "categories": [{"id": 100, "name": "sky"}], "annotations": [
        {"id": 9, "image_id": 2, "category_id": 100, "bbox": [0, 0, 20, 10], "area": 200, "iscrowd": 0, "segmentation": [[0, 0, 20, 0, 20, 10, 0, 10]]}
    ]}
    (tmp_path / "instances.json").write_text(json.dumps(instances))
    (tmp_path / "stuff.json").write_text(json.dumps(stuff))
    return tmp_path


def test_coco_regions_read_boxes_polygons_rle_and_stuff(tmp_path):
    root = _coco(tmp_path)
    names, items = coco_regions(root / "instances.json", root, lambda im: torch.from_numpy(np.array(im)).permute(2, 0, 1).float(), 16, stuff=root / "stuff.json")
    items = list(items)
    assert names == ["cat", "dog", "sky"]
    one, two = items
    assert one.image.shape == (3, 16, 16)
    torch.testing.assert_close(one.boxes, torch.tensor([[0.0, 0.0, 8.0, 8.0]]))  # crowd box skipped; x scaled 16/40, y 16/20
    assert one.box_labels == [1] and one.thing_labels == [1] and one.stuff_labels == []
    expected = torch.zeros(16, 16, dtype=torch.bool)
    expected[:8, :8] = True
    assert (one.things[0] == expected).float().mean() > 0.95  # polygon rasterised, resized nearest
    assert two.box_labels == [0] and two.stuff_labels == [2]
    rle = torch.zeros(16, 16, dtype=torch.bool)
    rle[8:, :8] = True
    assert torch.equal(two.things[0], rle)
    assert two.stuff[0][:8].float().mean() > 0.9 and not two.stuff[0][9:].any()


def test_missing_annotations_are_an_input_error(tmp_path):
    from gradeclip.errors import InputError

    with pytest.raises(InputError, match="does not exist"):
        coco_regions(tmp_path / "nope.json", tmp_path, lambda im: im, 16)


def test_region_accuracy_counts_each_kind(tiny_model):
    torch.manual_seed(3)
    images = [
        RegionImage(torch.randn(3, 32, 32), torch.tensor([[0.0, 0.0, 16.0, 16.0], [8.0, 4.0, 32.0, 30.0]]), [0, 1], torch.rand(1, 32, 32) > 0.5, [1]),
        RegionImage(torch.randn(3, 32, 32), torch.tensor([[2.0, 2.0, 30.0, 12.0]]), [2], torch.zeros(0, 32, 32, dtype=torch.bool), []),
    ]
    from gradeclip.finetune import dense_features
    from gradeclip.towers.registry import image_tower

    dense = dense_features(image_tower(tiny_model), torch.stack([r.image for r in images]))
    boxes = F.normalize(box_embeddings(dense, [r.boxes for r in images], 8), dim=-1)
    # classifier rows: the boxes' own embeddings, then a far class: every box's top-1 is its own row
    classifier = torch.cat([boxes, -boxes.mean(0, keepdim=True)])
    classifier = F.normalize(classifier, dim=-1)
    margins = boxes @ classifier.T
    own = margins.diagonal().clone()
    assert (own - margins.fill_diagonal_(-2).max(1).values > 1e-3).all()
    out = region_accuracy(tiny_model, images, classifier, batch_size=1)
    assert out["boxes"] == {"top1": 1.0, "top5": 1.0, "count": 3}
    assert out["things"]["count"] == 1 and out["stuff"]["count"] == 0 and math.isnan(out["stuff"]["top1"])


def test_eval_regions_command_on_the_synthetic_world(tmp_path, capsys):
    from gradeclip.cli import main
    from gradeclip.synth import make_scene

    out = tmp_path / "r.json"
    assert main(["eval", "regions", "--model", "gradeclip-synth", "--synth", "4", "--retrieval", "6", "--no-progress", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    objects = sum(len(make_scene(i, "test", 0).objects) for i in range(4))
    assert results["regions"]["boxes"]["count"] == results["regions"]["things"]["count"] == objects
    assert results["classes"] == 64 and set(results["retrieval"]) == {"t2i", "i2t"}
    assert "boxes" in capsys.readouterr().out
    assert main(["eval", "regions", "--model", "gradeclip-synth", "--annotations", str(tmp_path / "x.json")]) == 2
    assert "--images" in capsys.readouterr().err
