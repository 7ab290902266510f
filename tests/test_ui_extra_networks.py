"""Extra-networks cards without a browser: listing each page, user metadata read and written beside the file (and
nowhere else), previews, the cards' HTML, the thumbnail route, and the style editor's database operations."""
from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from safetensors.torch import save_file

from modules import network_cards, ui_extra_networks
from modules.extra_networks import EmbeddingLibrary
from modules.lora import LoraLibrary
from modules.network_cards import CardError, Cards
from modules.options import Options
from modules.paths import Paths
from modules.styles import StyleDatabase


class FakeModels:
    def __init__(self, ckpt_dir: Path) -> None:
        self.ckpt_dir = ckpt_dir
        self.refreshed = 0

    def refresh(self) -> None:
        self.refreshed += 1

    def list_checkpoints(self):
        return [SimpleNamespace(name=p.relative_to(self.ckpt_dir).as_posix(), filename=str(p),
                                title=f"{p.relative_to(self.ckpt_dir).as_posix()} [0123456789]")
                for p in sorted(self.ckpt_dir.rglob("*.safetensors"))]


def write_lora(path: Path, alias: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}, str(path),
              metadata={"ss_output_name": alias} if alias else None)
    return path


@pytest.fixture
def runtime(tmp_path):
    paths = Paths.from_args(data_dir=tmp_path / "data")
    paths.ensure()
    write_lora(paths.lora_dir / "detail.safetensors")
    write_lora(paths.lora_dir / "styles" / "ink.safetensors")
    save_file({"emb_params": torch.zeros(1, 8)}, str(paths.embeddings_dir / "goodcat.safetensors"))
    (paths.ckpt_dir / "model-a.safetensors").write_bytes(b"x")
    return SimpleNamespace(paths=paths, opts=Options(), loras=LoraLibrary(paths.lora_dir),
                           embeddings=EmbeddingLibrary(paths.embeddings_dir), models=FakeModels(paths.ckpt_dir))


def names(cards: Cards, page: str) -> list[str]:
    return [c.name for c in cards.list(page)]


def test_pages_list_each_kind_and_hypernetworks_only_when_their_folder_exists(runtime):
    assert [p.title for p in network_cards.pages(runtime)] == ["Textual Inversion", "Checkpoints", "Lora"]
    (runtime.paths.data_dir / "models" / "hypernetworks").mkdir()
    (runtime.paths.data_dir / "models" / "hypernetworks" / "anime.pt").write_bytes(b"x")
    assert [p.title for p in network_cards.pages(runtime)] == ["Textual Inversion", "Hypernetworks", "Checkpoints",
                                                               "Lora"]
    cards = Cards(runtime)
    assert sorted(names(cards, "lora")) == ["detail", "ink"]
    assert names(cards, "textual_inversion") == ["goodcat"]
    assert names(cards, "checkpoints") == ["model-a"]
    assert names(cards, "hypernetworks") == ["anime"]
    assert cards.find("hypernetworks", "anime").prompt(1.0) == "<hypernet:anime:1>"
    assert cards.find("checkpoints", "model-a").title == "model-a.safetensors [0123456789]"
    with pytest.raises(CardError, match="no extra-networks page"):
        cards.list("nothing")


def test_prompt_uses_preferred_weight_activation_text_and_the_default_multiplier(runtime):
    cards = Cards(runtime)
    lora = cards.find("lora", "detail")
    assert lora.prompt(1.0) == "<lora:detail:1>"
    assert lora.prompt(0.7) == "<lora:detail:0.7>"
    (runtime.paths.lora_dir / "detail.json").write_text(json.dumps(
        {"activation text": "intricate", "preferred weight": 0.6, "negative text": "blurry", "sd version": "SD1"}))
    cards.refresh(rescan_models=False)
    lora = cards.find("lora", "detail")
    assert lora.prompt(1.0) == "<lora:detail:0.6> intricate"
    assert lora.negative_prompt() == "blurry"
    assert cards.find("textual_inversion", "goodcat").prompt(1.0) == "goodcat"


def test_refresh_finds_new_files(runtime):
    cards = Cards(runtime)
    assert "fresh" not in names(cards, "lora")
    write_lora(runtime.paths.lora_dir / "fresh.safetensors")
    save_file({"emb_params": torch.zeros(1, 8)}, str(runtime.paths.embeddings_dir / "newemb.pt.safetensors"))
    assert "fresh" not in names(cards, "lora")          # listed once until Refresh
    cards.refresh()
    assert "fresh" in names(cards, "lora")
    assert "newemb.pt" in names(cards, "textual_inversion")
    assert runtime.models.refreshed == 1
    (runtime.paths.lora_dir / "fresh.safetensors").unlink()
    cards.refresh()
    with pytest.raises(CardError, match="there is no 'fresh'"):
        cards.find("lora", "fresh")


def test_user_metadata_is_saved_beside_the_file_keeping_other_keys(runtime):
    cards = Cards(runtime)
    card = cards.find("lora", "ink")
    target = runtime.paths.lora_dir / "styles" / "ink.json"
    target.write_text(json.dumps({"sd version": "SDXL", "description": "old"}))
    cards.refresh(rescan_models=False)
    card = cards.find("lora", "ink")
    saved = network_cards.save_user_metadata(card, {"description": "Ink wash", "activation text": "ink style",
                                                    "preferred weight": "0.8", "notes": None})
    on_disk = json.loads(target.read_text())
    assert on_disk == saved == {"sd version": "SDXL", "description": "Ink wash", "activation text": "ink style",
                                "preferred weight": 0.8, "notes": ""}
    assert cards.find("lora", "ink").prompt(1.0) == "<lora:ink:0.8> ink style"
    for bad in ("heavy", "nan", "inf", 99):
        with pytest.raises(CardError, match="preferred weight"):
            network_cards.save_user_metadata(card, {"preferred weight": bad})
    assert json.loads(target.read_text())["preferred weight"] == 0.8     # a refused save writes nothing


def test_a_broken_metadata_file_is_empty_metadata(runtime):
    (runtime.paths.lora_dir / "detail.json").write_text("{not json")
    assert Cards(runtime).find("lora", "detail").metadata == {}
    (runtime.paths.lora_dir / "detail.json").write_text("[1, 2]")
    assert Cards(runtime).find("lora", "detail").metadata == {}


@pytest.mark.parametrize("name", ["../../config", "/etc/passwd", "styles/ink", "detail/../../x", "", "..", "ink.json"])
def test_names_from_the_page_cannot_reach_outside_the_listing(runtime, name):
    with pytest.raises(CardError):
        Cards(runtime).find("lora", name)


def test_nothing_is_written_through_a_link_or_outside_the_models_folder(runtime, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    write_lora(outside / "escape.safetensors")
    os.symlink(outside / "escape.safetensors", runtime.paths.lora_dir / "linked.safetensors")   # a linked file
    cards = Cards(runtime)
    cards.refresh()
    linked = cards.find("lora", "linked")
    network_cards.save_user_metadata(linked, {"description": "kept beside the link"})
    network_cards.save_preview(linked, Image.new("RGB", (8, 8)))
    assert (runtime.paths.lora_dir / "linked.json").is_file()
    assert (runtime.paths.lora_dir / "linked.preview.png").is_file()
    os.symlink(outside, runtime.paths.lora_dir / "folder-link")    # a folder link: its files would be outside
    card = network_cards.Card("lora", "escape", runtime.paths.lora_dir / "folder-link" / "escape.safetensors",
                              runtime.paths.lora_dir, kind_tag="lora")
    with pytest.raises(CardError, match="outside"):
        network_cards.save_user_metadata(card, {"description": "x"})
    with pytest.raises(CardError, match="outside"):
        network_cards.save_preview(card, Image.new("RGB", (8, 8)))
    assert sorted(p.name for p in outside.iterdir()) == ["escape.safetensors"]
    victim = tmp_path / "victim.json"
    victim.write_text("{}")
    os.symlink(victim, runtime.paths.lora_dir / "detail.json")     # the .json beside the file is a link
    with pytest.raises(CardError, match="link"):
        network_cards.save_user_metadata(cards.find("lora", "detail"), {"description": "x"})
    assert victim.read_text() == "{}"


def test_preview_is_written_and_found_before_a_plain_picture(runtime):
    cards = Cards(runtime)
    card = cards.find("lora", "detail")
    assert card.preview() is None
    Image.new("RGB", (8, 8), "blue").save(runtime.paths.lora_dir / "detail.png")
    assert card.preview() == runtime.paths.lora_dir / "detail.png"
    target = network_cards.save_preview(card, Image.new("RGB", (16, 12), (255, 0, 0)))
    assert target == runtime.paths.lora_dir / "detail.preview.png"
    assert card.preview() == target
    with Image.open(target) as saved:
        assert saved.size == (16, 12) and saved.getpixel((0, 0)) == (255, 0, 0)
    assert not [p for p in runtime.paths.lora_dir.iterdir() if p.name.startswith(".")]     # no temporary files left


def test_cards_html_is_escaped_and_carries_what_a_click_adds(runtime):
    cards = Cards(runtime)
    (runtime.paths.lora_dir / "detail.json").write_text(json.dumps({"description": "<b>x</b>'\"",
                                                                    "activation text": "a 'b'"}))
    Image.new("RGB", (8, 8)).save(runtime.paths.lora_dir / "detail.preview.png")
    text = ui_extra_networks.cards_html(cards, network_cards.LORA, 1.0)
    assert "<b>x</b>" not in text and "&lt;b&gt;x&lt;/b&gt;" in text
    assert "data-prompt='&lt;lora:detail:1&gt; a &#x27;b&#x27;'" in text
    assert "sd_extra_networks/thumb?page=lora&amp;name=detail&amp;t=" in text
    assert text.count("class='extra-network-card'") == 2
    assert "class='placeholder'" in text            # ink has no picture
    empty = ui_extra_networks.cards_html(cards, network_cards.HYPERNETWORKS, 1.0)
    assert "Nothing here yet" in empty


def test_sorting(runtime):
    cards = Cards(runtime)
    older = runtime.paths.lora_dir / "detail.safetensors"
    os.utime(older, (1_000_000, 1_000_000))
    assert [c.name for c in cards.sorted("lora", "Name")] == ["detail", "ink"]
    assert [c.name for c in cards.sorted("lora", "Name", reverse=True)] == ["ink", "detail"]
    assert [c.name for c in cards.sorted("lora", "Date modified")] == ["ink", "detail"]     # newest first


def test_thumbnail_route_serves_only_listed_previews(runtime):
    Image.new("RGB", (8, 8), "green").save(runtime.paths.lora_dir / "detail.preview.png")
    (runtime.paths.data_dir / "secret.png").write_bytes(b"secret")
    app = FastAPI()
    ui_extra_networks.add_routes(app, runtime)
    client = TestClient(app)
    ok = client.get("/sd_extra_networks/thumb", params={"page": "lora", "name": "detail"})
    assert ok.status_code == 200 and ok.content == (runtime.paths.lora_dir / "detail.preview.png").read_bytes()
    assert client.get("/sd_extra_networks/thumb", params={"page": "lora", "name": "ink"}).status_code == 404
    for name in ("../../secret", "../secret.png", "/etc/passwd"):
        assert client.get("/sd_extra_networks/thumb", params={"page": "lora", "name": name}).status_code == 404
    assert client.get("/sd_extra_networks/thumb", params={"page": "../x", "name": "detail"}).status_code == 404


def test_gallery_image_takes_the_selected_or_the_first(tmp_path):
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    Image.new("RGB", (4, 4), "red").save(first)
    Image.new("RGB", (4, 4), "blue").save(second)
    gallery = [(str(first), None), (str(second), None)]
    assert ui_extra_networks.gallery_image(gallery, 1).getpixel((0, 0)) == (0, 0, 255)
    assert ui_extra_networks.gallery_image(gallery, -1).getpixel((0, 0)) == (255, 0, 0)
    with pytest.raises(CardError, match="Generate an image first"):
        ui_extra_networks.gallery_image([], 0)


# --- styles: the editor's operations --------------------------------------------------------------------------------
def test_style_editor_saves_deletes_and_keeps_edits_made_on_disk(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_text("name,prompt,negative_prompt\nold,vintage,\n", encoding="utf-8")
    database = StyleDatabase(path)
    database.save_style(" Cinematic ", "cinematic still of {prompt}", "cartoon")
    assert StyleDatabase(path).styles["Cinematic"].negative_prompt == "cartoon"
    with open(path, "a", encoding="utf-8") as f:       # someone edits the file by hand meanwhile
        f.write("handmade,by hand,\n")
    database.save_style("Cinematic", "film still of {prompt}", "")
    reread = StyleDatabase(path)
    assert list(reread.styles) == ["old", "Cinematic", "handmade"]
    assert reread.styles["Cinematic"].prompt == "film still of {prompt}"
    database.delete_style("old")
    assert list(StyleDatabase(path).styles) == ["Cinematic", "handmade"]
    with pytest.raises(KeyError, match="no style"):
        database.delete_style("old")
    for bad in ("", "   ", "two\nlines"):
        with pytest.raises(ValueError, match="name"):
            database.save_style(bad, "x")


def test_a_broken_styles_file_is_reported_keeps_the_previous_styles_and_is_not_overwritten(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_text("name,prompt,negative_prompt\nkeep,kept prompt,\n", encoding="utf-8")
    database = StyleDatabase(path)
    assert database.error is None
    path.write_bytes(b"name,prompt\nbad,\xff\xfe broken\n")
    assert database.reload_if_changed()
    assert "could not be read" in database.error and list(database.styles) == ["keep"]
    with pytest.raises(ValueError, match="not overwritten"):
        database.save_style("new", "x")
    assert path.read_bytes() == b"name,prompt\nbad,\xff\xfe broken\n"
    path.write_text("title,text\nx,y\n", encoding="utf-8")
    database.reload()
    assert "'name' column" in database.error and list(database.styles) == ["keep"]
    path.write_text("name,prompt\nfixed,ok\n", encoding="utf-8")
    database.reload()
    assert database.error is None and list(database.styles) == ["fixed"]
    assert StyleDatabase(tmp_path / "missing.csv").error is None
