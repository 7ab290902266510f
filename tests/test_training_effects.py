"""Training effects on the shipped default model, read back by modules.analyser (the experiments are in
modules.training.effects; benchmarks/training_effects.py runs them at several seeds).

- Textual inversion learns a subject the model can draw but has no word for: a large orange triangle, named only by
  the embedding. Before training the embedding's prompts give orange triangles at most 20% of the time, after it at
  least 80%.
- LoRA teaches a style the base model never saw: narrow shapes (half their width, full height; large ones, the
  small ones are below what the VAE keeps). With ``<lora:narrow:1>`` at least 80% of the images are narrow, with
  ``<lora:narrow:0>`` at most 10%, and the prompt's colour and shape are still drawn (shape at least 60%: narrow
  squares come out with round corners and some read as circles). The 2-pixel styles, outlined or striped, do not
  survive the default model's f=4 VAE; see benchmarks/RESULTS.md.

Skipped only when models/Stable-diffusion/ ships no model.
"""
from __future__ import annotations

import pytest

from modules import lora
from modules.options import Options
from modules.progress import JobState
from modules.sd_models import ModelManager
from modules.training import CreateEmbeddingRequest, TrainingEnv, create_embedding, effects, train_embedding, train_lora
from tests.fixtures_models import SHIPPED, paths_with_shipped_models

pytestmark = [pytest.mark.skipif(not SHIPPED, reason="models/Stable-diffusion/ ships no model"),
              pytest.mark.usefixtures("single_torch_thread")]

SEEDS = (1, 2, 3, 4, 5)
SUBJECT = "zq-shape"  # the embedding's name and trigger word


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> TrainingEnv:
    data_dir = tmp_path_factory.mktemp("training-effects")
    paths = paths_with_shipped_models(data_dir)
    model = ModelManager(paths, Options()).select_default()
    opts = Options(samples_save=False, live_previews_enable=False)
    yield TrainingEnv(model, paths.embeddings_dir, paths.lora_dir, data_dir, opts, lora.LoraLibrary(paths.lora_dir))
    lora.unload(model)


def test_textual_inversion_learns_a_subject(env):
    create_embedding(env, CreateEmbeddingRequest(name=SUBJECT, num_vectors_per_token=2))
    assert effects.subject_share(env, SUBJECT, SEEDS) <= 0.2
    result = train_embedding(env, effects.subject_request(env, SUBJECT, seed=0), JobState())
    assert result.step == effects.SUBJECT_TRAINING["steps"]
    assert effects.subject_share(env, SUBJECT, SEEDS) >= 0.8


def test_lora_teaches_a_new_style(env):
    result = train_lora(env, effects.style_request(env, "narrow", seed=0), JobState())
    assert result.path == env.lora_dir / "narrow.safetensors"
    shares = effects.style_shares(env, "narrow", prompts=12, seeds=SEEDS[:3])
    print("LoRA narrow style:", {k: round(v, 3) for k, v in shares.items()})  # shown with pytest -rP
    assert shares["narrow at 0"] <= 0.1, shares
    assert shares["colour at 1"] >= 0.8 and shares["shape at 1"] >= 0.6, shares
    assert shares["narrow at 1"] >= 0.8, shares
