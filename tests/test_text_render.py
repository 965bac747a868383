"""HTML and PNG renderings of word importances."""

from __future__ import annotations

import io
import re
import warnings

import pytest
from PIL import Image

import gradeclip
from gradeclip import text_render
from gradeclip.text_render import SHADE, spaces_before, text_html, text_png, word_colours

WORDS = [('"', 0.05), ("Hello", 0.4), (',"', 0.0), ("<b>café</b>", 0.2), ("東京", 0.35)]
TEXT = '"Hello," <b>café</b>  東京'


def test_colours_follow_importance():
    colours = word_colours(WORDS)
    assert colours[1] == SHADE  # the most important word gets the full shade
    assert colours[2] == (255, 255, 255)  # zero importance stays white
    greens = [c[1] for c in colours]
    order = sorted(range(len(WORDS)), key=lambda i: WORDS[i][1])
    assert [greens[i] for i in order] == sorted(greens, reverse=True)  # more important, darker
    assert word_colours([("a", 0.0), ("b", 0.0)]) == [(255, 255, 255)] * 2


def test_html_is_escaped_shaded_and_spaced_as_written():
    snippet = text_html(WORDS, text=TEXT)
    assert snippet.startswith("<div") and snippet.endswith("</div>") and "<script" not in snippet
    assert "&lt;b&gt;café&lt;/b&gt;" in snippet and "<b>" not in snippet
    assert f"background-color:#{SHADE[0]:02x}{SHADE[1]:02x}{SHADE[2]:02x}" in snippet
    visible = re.sub(r"<[^>]+>", "", snippet).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
    assert visible == '"Hello," <b>café</b> 東京'
    plain = re.sub(r"<[^>]+>", "", text_html(WORDS)).replace("&quot;", '"')
    assert plain.startswith('" Hello ,"')


def test_spacing_needs_the_words_own_caption():
    assert spaces_before(WORDS, TEXT) == [False, False, False, True, True]
    with pytest.raises(gradeclip.InputError, match="does not occur"):
        spaces_before(WORDS, "something else")


def test_png_decodes_and_wraps(monkeypatch):
    monkeypatch.setattr(text_render, "_WARNED", set())
    with pytest.warns(UserWarning, match="no glyphs for 東 京"):  # DejaVu Sans (or Pillow's font) has no CJK
        one_line = Image.open(io.BytesIO(text_png(WORDS, text=TEXT, width=640)))
    assert one_line.format == "PNG" and one_line.mode == "RGB" and one_line.width == 640
    many = [(f"word{i}", i / 30) for i in range(30)]
    wrapped = Image.open(io.BytesIO(text_png(many, width=200, font_size=16)))
    assert wrapped.height > 4 * one_line.height / 2  # several lines
    pixels = {wrapped.getpixel((x, y)) for x in range(0, 200, 2) for y in range(0, wrapped.height, 2)}
    assert SHADE in pixels  # the top word's background is drawn


@pytest.mark.parametrize("bad", [[("a", -0.1)], [("a", float("nan"))], [("a",)], ["a"]], ids=["negative", "nan", "short", "string"])
def test_bad_words_raise(bad):
    with pytest.raises(gradeclip.InputError):
        text_html(bad)


def test_text_png_warns_once_about_missing_glyphs(monkeypatch):
    monkeypatch.setattr(text_render, "_WARNED", set())
    font = "DejaVuSans.ttf"
    try:
        from PIL import ImageFont

        ImageFont.truetype(font, 20)
    except OSError:
        font = None  # Pillow's built-in font lacks CJK too
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        text_png([("a", 0.5), ("café", 0.5)], font_path=font)
        assert not caught  # Latin letters are in the font
        text_png([("東京", 0.7), ("cat", 0.3)], font_path=font)
        text_png([("東京", 0.7)], font_path=font)  # the same characters again: no second warning
    assert len(caught) == 1 and "has no glyphs for 東 京" in str(caught[0].message) and "font_path=" in str(caught[0].message)
