"""ui_habits without a browser: an infotext becomes every widget value, the selected picture's infotext, the
default model's note derived from the world's vocabulary."""
from __future__ import annotations

import json
from types import SimpleNamespace

from modules import infotext, ui_habits, world

INFOTEXT = ("a red circle\nNegative prompt: blurry\nSteps: 7, Sampler: Euler, Schedule type: Karras, CFG scale: 5, "
            "Seed: 11, Size: 64x96, Variation seed: 3, Variation seed strength: 0.25, Seed resize from: 32x48, "
            "Denoising strength: 0.4, Hires resize: 128x192, Hires upscaler: Lanczos, Hires sampler: DPM++ 2M, "
            'Hires prompt: "a red circle, large"')
CHOICES = {"sampler_name": ["Euler", "DPM++ 2M"], "scheduler": ["Automatic", "Karras"],
           "hr_upscaler": ["Latent", "Lanczos"], "hr_sampler_name": ["Use same sampler", "DPM++ 2M"],
           "hr_scheduler": ["Use same scheduler", "Karras"]}


def values(text: str, txt2img: bool = True) -> dict:
    return ui_habits.field_values(infotext.parse_generation_parameters(text), CHOICES, txt2img=txt2img)


def test_every_field_of_a_txt2img_infotext():
    v = values(INFOTEXT)
    assert (v["prompt"], v["negative_prompt"], v["steps"], v["sampler_name"], v["scheduler"]) == \
        ("a red circle", "blurry", 7, "Euler", "Karras")
    assert (v["cfg_scale"], v["seed"], v["width"], v["height"]) == (5.0, 11, 64, 96)
    assert (v["subseed"], v["subseed_strength"], v["seed_resize_from_w"], v["seed_resize_from_h"]) == (3, 0.25, 32, 48)
    assert v["enable_hr"] is True and v["denoising_strength"] == 0.4 and v["hr_upscaler"] == "Lanczos"
    assert (v["hr_resize_x"], v["hr_resize_y"], v["hr_sampler_name"], v["hr_scheduler"]) == \
        (128, 192, "DPM++ 2M", "Use same scheduler")
    assert v["hr_prompt"] == "a red circle, large" and v["hr_negative_prompt"] == ""


def test_absent_parameters_switch_their_feature_off_and_unknown_choices_keep_the_widget():
    v = values("a square\nSteps: 4, Sampler: Restart-like, CFG scale: 7, Seed: 5, Size: 64x64")
    assert v["enable_hr"] is False and v["subseed"] == -1 and v["subseed_strength"] == 0.0
    assert v["seed_resize_from_w"] == 0 and v["hr_sampler_name"] == "Use same sampler" and v["hr_prompt"] == ""
    assert v["sampler_name"] is ui_habits.KEEP and v["denoising_strength"] is ui_habits.KEEP
    img = values(INFOTEXT, txt2img=False)
    assert img["denoising_strength"] == 0.4 and "enable_hr" not in img


def test_infotext_detection_and_the_selected_pictures_infotext():
    assert ui_habits.looks_like_infotext(INFOTEXT)
    assert not ui_habits.looks_like_infotext("a red circle, on a blue background")
    info = json.dumps({"infotexts": ["grid", "first", "second"]})
    assert ui_habits.gallery_infotext(info, 2) == "second"
    assert ui_habits.gallery_infotext(info, -1) == "grid"      # nothing selected: the first
    assert ui_habits.gallery_infotext("", 1) == ""


def test_last_generation_skips_jobs_without_infotext():
    entries = [SimpleNamespace(kind="extras", infotext="x"), SimpleNamespace(kind="txt2img", infotext=""),
               SimpleNamespace(kind="img2img", infotext="a blue square\nSteps: 3")]
    runtime = SimpleNamespace(queue=SimpleNamespace(history=lambda limit: entries))
    assert ui_habits.last_generation_infotext(runtime) == "a blue square\nSteps: 3"


def test_the_note_is_made_from_the_worlds_vocabulary(monkeypatch):
    text = ui_habits.knowledge_text()
    for word in (*world.SHAPES, *world.COLORS, *world.SIZES, *world.POSITION_PHRASES.values()):
        assert word in text
    monkeypatch.setattr(world, "SHAPES", ("circle", "hexagon"))
    assert "hexagon" in ui_habits.knowledge_text() and "triangle" not in ui_habits.knowledge_text()
    for prompt in ui_habits.example_prompts():
        assert world.parse_prompt_attributes(prompt)["color"] in world.COLORS


def test_the_note_only_for_the_default_model():
    def model(config):
        return SimpleNamespace(sd_checkpoint_info=SimpleNamespace(metadata=lambda: {"sd_config": config}))

    assert "circle" in ui_habits.knowledge_note_html(model("default-tiny"))
    assert "e.g." in ui_habits.prompt_placeholder(model("default-tiny"))
    assert ui_habits.knowledge_note_html(model("sd15")) == "" and ui_habits.knowledge_note_html(None) == ""
    assert "e.g." not in ui_habits.prompt_placeholder(model("sd15"))
