"""Prompt styles: A1111's styles.csv format, how styles merge into prompts, and styles applied by a generation job."""
from __future__ import annotations

import numpy as np
import pytest

from modules.extra_networks import PromptResources
from modules.options import Options
from modules.processing import StableDiffusionProcessingTxt2Img, process_images
from modules.progress import JobState
from modules.styles import PromptStyle, StyleDatabase, merge_prompts

CSV = (
    "\ufeffname,prompt,negative_prompt\n"
    'photo,"photo of {prompt}, sharp",blurry\n'
    'detail,"highly detailed, 4k","lowres, {prompt}"\n'
    ",orphan without a name,\n"
    '"multi, line","first\nsecond",\n'
)


@pytest.fixture
def database(tmp_path) -> StyleDatabase:
    path = tmp_path / "styles.csv"
    path.write_text(CSV, encoding="utf-8")
    return StyleDatabase(path)


@pytest.mark.parametrize("style,prompt,expected", [
    ("photo of {prompt}, sharp", "a cat", "photo of a cat, sharp"),
    ("4k", "a cat", "a cat, 4k"),
    ("  4k ", " a cat  ", "a cat, 4k"),
    ("4k", "", "4k"),
    ("", "a cat", "a cat"),
    ("{prompt} and {prompt}", "x", "x and x"),
])
def test_merge_prompts(style, prompt, expected):
    assert merge_prompts(style, prompt) == expected


def test_reads_a1111_csv(database):
    assert list(database.styles) == ["photo", "detail", "multi, line"]
    assert database.styles["photo"] == PromptStyle("photo", "photo of {prompt}, sharp", "blurry")
    assert database.styles["multi, line"].prompt == "first\nsecond"
    assert database.api_listing()[1] == {"name": "detail", "prompt": "highly detailed, 4k",
                                         "negative_prompt": "lowres, {prompt}"}


def test_styles_apply_in_order_and_unknown_names_are_ignored(database):
    styles = ["photo", "nope", "detail"]
    assert database.apply_styles_to_prompt("a cat", styles) == "photo of a cat, sharp, highly detailed, 4k"
    assert database.apply_negative_styles_to_prompt("ugly", styles) == "lowres, ugly, blurry"
    assert database.apply_styles_to_prompt("a cat", []) == "a cat"


def test_legacy_text_column_and_missing_file(tmp_path):
    path = tmp_path / "old.csv"
    path.write_text("name,text\nold,vintage\n", encoding="utf-8")
    assert StyleDatabase(path).styles["old"] == PromptStyle("old", "vintage", "")
    assert StyleDatabase(tmp_path / "missing.csv").styles == {}


def test_save_round_trips_and_reload_notices_changes(database, tmp_path):
    database.styles["new"] = PromptStyle("new", 'quote " and, comma', "neg\nline")
    database.save_styles()
    again = StyleDatabase(database.path)
    assert again.styles == database.styles
    assert not again.reload_if_changed()
    database.path.write_text("name,prompt,negative_prompt\nonly,x,y\n", encoding="utf-8")
    assert again.reload_if_changed() and list(again.styles) == ["only"]
    assert not list(tmp_path.glob(".styles-*"))  # no temporary file left behind


def run(model, database, **kw):
    p = StableDiffusionProcessingTxt2Img(steps=2, width=64, height=64, seed=7, do_not_save_samples=True,
                                         do_not_save_grid=True, **kw)
    p.sd_model, p.opts, p.state = model, Options(), JobState()
    p.prompt_resources = PromptResources(styles=database)
    return process_images(p)


def test_job_applies_styles_and_the_infotext_keeps_the_styled_prompt(tiny_sd1_model, database):
    styled = run(tiny_sd1_model, database, prompt="a red circle", negative_prompt="ugly",
                 styles=["photo", "detail", "nope"])
    assert styled.all_prompts == ["photo of a red circle, sharp, highly detailed, 4k"]
    assert styled.all_negative_prompts == ["lowres, ugly, blurry"]
    assert styled.infotexts[0].startswith("photo of a red circle, sharp, highly detailed, 4k\n"
                                          "Negative prompt: lowres, ugly, blurry\n")
    assert "Style not found: nope" in styled.p.comments
    assert styled.p.prompt == "a red circle"  # the parameters keep what was asked for
    direct = run(tiny_sd1_model, database, prompt="photo of a red circle, sharp, highly detailed, 4k",
                 negative_prompt="lowres, ugly, blurry")
    assert np.array_equal(np.asarray(styled.images[0]), np.asarray(direct.images[0]))
