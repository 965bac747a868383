"""The tower registry is read from its tables: an entry decides which adapter a model gets, and a
tower class without one is refused with the reason (the adapters themselves: tests/test_towers_*.py)."""

from __future__ import annotations

import pytest
from torch import nn

from gradeclip.errors import UnsupportedModelError
from gradeclip.towers import registry
from gradeclip.towers.registry import image_tower, text_tower


class OddTower(nn.Module):
    pass


class OddModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.visual = OddTower()
        self.text = OddTower()


def test_open_clip_towers_come_from_the_tables(monkeypatch):
    model = OddModel()
    with pytest.raises(UnsupportedModelError, match="OddModel with a OddTower image tower: no gradeclip adapter"):
        image_tower(model)
    with pytest.raises(UnsupportedModelError, match="OddModel with a OddTower text tower: no gradeclip adapter"):
        text_tower(model)
    image, text = object(), object()
    monkeypatch.setitem(registry.OPEN_CLIP_IMAGE, "OddTower", lambda m, visual: (image, m, visual))
    monkeypatch.setitem(registry.OPEN_CLIP_TEXT, "OddTower", lambda m, tower: (text, m, tower))
    assert image_tower(model) == (image, model, model.visual)
    assert text_tower(model) == (text, model, model.text)


def test_the_library_table_comes_first(monkeypatch):
    model = OddModel()
    monkeypatch.setattr(OddModel, "__module__", "somelib.models")
    monkeypatch.setitem(registry.IMAGE_BY_LIBRARY, "somelib", lambda m: ("somelib", m))
    assert image_tower(model) == ("somelib", model)
    monkeypatch.setattr(OddModel, "__module__", "transformers.models.odd")
    with pytest.raises(UnsupportedModelError, match="transformers OddModel: no gradeclip adapter for it"):
        image_tower(model)


def test_every_adapter_named_in_the_tables_exists():
    for towers in registry.HF_ADAPTERS.values():
        for adapter in (towers.image, towers.text):
            assert isinstance(adapter.load(), type), adapter
