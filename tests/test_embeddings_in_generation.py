"""Textual-inversion embeddings in generation: the runtime's per-model embeddings, their effect, ``TI hashes``.

The test embedding ``zzred`` holds exactly the token embedding of "red", so "a zzred circle" must condition (and
draw) bit for bit like "a red circle".
"""
from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from modules.extra_networks import EmbeddingLibrary, PromptResources
from modules.options import Options
from modules.paths import Paths
from modules.processing import StableDiffusionProcessingTxt2Img, conds_for, process_images
from modules.progress import JobState
from modules.runtime import Runtime


def token_vector(model, word: str) -> torch.Tensor:
    (token,) = model.tokenizer(word, add_special_tokens=False)["input_ids"]
    return model.text_encoder.get_input_embeddings().weight[token].detach().clone()


def write_embeddings(model, directory: Path) -> None:
    """``zzred`` (A1111 .pt, the vector of "red"), ``wide`` (wrong width: skipped), ``broken.pt`` (unreadable)."""
    directory.mkdir(parents=True, exist_ok=True)
    torch.save({"string_to_param": {"*": token_vector(model, "red")[None]}, "name": "zzred", "step": 100,
                "sd_checkpoint": None, "sd_checkpoint_name": None}, directory / "zzred.pt")
    (directory / "sub").mkdir(exist_ok=True)
    save_file({"emb_params": torch.ones(2, 7)}, str(directory / "sub" / "wide.safetensors"))
    (directory / "broken.pt").write_bytes(b"not a pickle")


def short_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


@pytest.fixture
def embeddings_dir(tmp_path, tiny_sd1_model) -> Path:
    write_embeddings(tiny_sd1_model, tmp_path / "embeddings")
    return tmp_path / "embeddings"


def job(model, resources: PromptResources, **kw) -> StableDiffusionProcessingTxt2Img:
    p = StableDiffusionProcessingTxt2Img(steps=3, width=64, height=64, seed=99, do_not_save_samples=True,
                                         do_not_save_grid=True, **kw)
    p.sd_model, p.opts, p.state = model, Options(), JobState()
    p.prompt_resources = resources
    return p


def pixels(processed) -> np.ndarray:
    return np.asarray(processed.images[0], dtype=np.int16)


def test_embedding_conditions_exactly_like_the_word_it_holds(tiny_sd1_model, embeddings_dir):
    resources = PromptResources(embeddings=EmbeddingLibrary(embeddings_dir).for_model(tiny_sd1_model))
    with_embedding = job(tiny_sd1_model, resources)
    conds, unconds = conds_for(with_embedding, tiny_sd1_model, ["a zzred circle"], ["zzred"], 4)
    plain = job(tiny_sd1_model, resources)
    red_conds, red_unconds = conds_for(plain, tiny_sd1_model, ["a red circle"], ["red"], 4)

    def embeds(schedule):
        return schedule.batch[0][0].schedules[0].cond.embeds

    assert torch.equal(embeds(conds), embeds(red_conds)) and torch.equal(embeds(unconds), embeds(red_unconds))
    expected = f"zzred: {short_sha256(embeddings_dir / 'zzred.pt')}"
    assert with_embedding.extra_generation_params == {"TI hashes": expected}
    assert "TI hashes" not in plain.extra_generation_params


def test_embedding_changes_the_picture_and_is_hashed_in_the_infotext(tiny_sd1_model, embeddings_dir):
    resources = PromptResources(embeddings=EmbeddingLibrary(embeddings_dir).for_model(tiny_sd1_model))
    with_embedding = process_images(job(tiny_sd1_model, resources, prompt="a zzred circle"))
    red = process_images(job(tiny_sd1_model, resources, prompt="a red circle"))
    without = process_images(job(tiny_sd1_model, PromptResources(), prompt="a zzred circle"))
    assert np.array_equal(pixels(with_embedding), pixels(red))
    assert not np.array_equal(pixels(with_embedding), pixels(without))
    assert f'TI hashes: "zzred: {short_sha256(embeddings_dir / "zzred.pt")}"' in with_embedding.infotexts[0]
    assert "TI hashes" not in without.infotexts[0]


def test_unreadable_and_unfit_files_are_skipped_and_listed(tiny_sd1_model, embeddings_dir):
    loaded = EmbeddingLibrary(embeddings_dir).for_model(tiny_sd1_model)
    assert set(loaded.database.word_embeddings) == {"zzred"}
    assert set(loaded.database.skipped_embeddings) == {"wide"}
    assert list(loaded.errors) == ["broken.pt"]
    listing = EmbeddingLibrary(embeddings_dir).api_listing(tiny_sd1_model)
    assert listing["loaded"]["zzred"]["step"] == 100 and listing["loaded"]["zzred"]["vectors"] == 1
    assert EmbeddingLibrary(embeddings_dir).api_listing(None) == {"loaded": {}, "skipped": {}}


class OtherModel(SimpleNamespace):
    """Another model with the same text encoder (the library keeps a weak reference to its model)."""


def test_library_reloads_when_the_folder_or_the_model_changes(tiny_sd1_model, embeddings_dir):
    library = EmbeddingLibrary(embeddings_dir)
    first = library.for_model(tiny_sd1_model)
    assert library.for_model(tiny_sd1_model) is first and library.loaded_for(tiny_sd1_model) is first
    torch.save({"string_to_param": {"*": token_vector(tiny_sd1_model, "blue")[None]}}, embeddings_dir / "zzblue.pt")
    second = library.for_model(tiny_sd1_model)
    assert second is not first and "zzblue" in second.database.word_embeddings
    other_model = OtherModel(**{name: getattr(tiny_sd1_model, name) for name in
                                ("tokenizer", "text_encoder", "tokenizer_2", "text_encoder_2", "family")})
    assert library.loaded_for(other_model) is None
    assert library.for_model(other_model) is not second
    library.refresh()
    assert library.loaded_for(other_model) is None


def test_runtime_gives_each_job_the_current_embeddings_and_styles(tiny_sd1_model, tmp_path):
    paths = Paths.from_args(data_dir=tmp_path)
    runtime = Runtime(args=argparse.Namespace(), paths=paths, opts=Options(samples_save=False),
                      models=SimpleNamespace(current=tiny_sd1_model))
    (tmp_path / "styles.csv").write_text("name,prompt,negative_prompt\nred,{prompt} zzred,\n", encoding="utf-8")

    def run() -> object:
        p = StableDiffusionProcessingTxt2Img(prompt="a circle", styles=["red"], steps=2, width=64, height=64,
                                             seed=5, do_not_save_grid=True)
        return process_images(runtime.prepare(p, JobState()))

    before = run()  # no embeddings folder yet: "zzred" is just a word
    assert before.all_prompts == ["a circle zzred"] and "TI hashes" not in before.infotexts[0]
    write_embeddings(tiny_sd1_model, paths.embeddings_dir)
    after = run()
    assert "TI hashes: \"zzred: " in after.infotexts[0]
    assert not np.array_equal(pixels(before), pixels(after))


def test_refresh_embeddings_route_rescans_files_changed_in_place(tiny_sd1_model, tmp_path):
    """POST /sdapi/v1/refresh-embeddings (A1111) reads the folder again even when a file kept its size and time."""
    import os

    from fastapi.testclient import TestClient

    from modules.api.api import create_api_app

    paths = Paths.from_args(data_dir=tmp_path)
    runtime = Runtime(args=argparse.Namespace(cors_allow_origins=None, api_auth=None), paths=paths,
                      opts=Options(), models=SimpleNamespace(current=tiny_sd1_model))
    write_embeddings(tiny_sd1_model, paths.embeddings_dir)
    target = paths.embeddings_dir / "zzred.pt"

    def save(step: int) -> None:
        torch.save({"string_to_param": {"*": token_vector(tiny_sd1_model, "red")[None]}, "name": "zzred",
                    "step": step, "sd_checkpoint": None, "sd_checkpoint_name": None}, target)

    with TestClient(create_api_app(runtime)) as client:
        assert client.get("/sdapi/v1/embeddings").json()["loaded"]["zzred"]["step"] == 100
        stat = target.stat()
        save(200)
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert target.stat().st_size == stat.st_size  # nothing tells the library the file changed ...
        assert client.get("/sdapi/v1/embeddings").json()["loaded"]["zzred"]["step"] == 100
        assert client.post("/sdapi/v1/refresh-embeddings").status_code == 200  # ... but a refresh reads it again
        assert client.get("/sdapi/v1/embeddings").json()["loaded"]["zzred"]["step"] == 200
