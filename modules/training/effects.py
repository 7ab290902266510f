"""What training teaches the default model, measured: the two experiments of issue 7, shared by
tests/test_training_effects.py (one short run, asserted) and benchmarks/training_effects.py (several runs, a table).

- **Textual inversion of a subject**: 24 pictures of a large orange triangle on eight backgrounds, captioned with
  their background and position only; the embedding must come to mean "orange triangle".
- **LoRA of a style**: 64 pictures of large *narrow* shapes (half their width; the small ones are about two latent
  pixels wide, below what the f=4 VAE keeps) with full captions; ``<lora:NAME:1>`` must draw narrow shapes and keep
  the prompt's colour and shape, ``<lora:NAME:0>`` must not.

Everything is read back by ``modules.analyser``.
"""
from __future__ import annotations

import itertools
import random
from typing import Any

import numpy as np
from PIL import Image

from modules import analyser, lora, world
from modules.extra_networks import EmbeddingLibrary, PromptResources
from modules.processing import StableDiffusionProcessingTxt2Img, process_images
from modules.progress import JobState
from modules.training.common import TrainingEnv
from modules.training.lora_train import UNET_MODULES, TrainLoraRequest
from modules.training.textual_inversion import TrainEmbeddingRequest

SUBJECT_BACKGROUNDS = ("white", "yellow", "green", "cyan", "purple", "pink", "blue", "black")
SUBJECT_EVAL_BACKGROUNDS = ("white", "green", "yellow", "cyan")
SUBJECT_TEMPLATE = "a [name] [filewords]\n"
SUBJECT_TEMPLATE_FILE = "subject_on.txt"
# The settings the test uses (and the benchmark's defaults): fields of TrainEmbeddingRequest / TrainLoraRequest.
SUBJECT_TRAINING = dict(learn_rate="0.02:300, 0.005", steps=400, batch_size=4)
# The look is geometry at the 16×16 latent level, where the tiny UNet has no attention: its convolutions train too.
STYLE_TRAINING = dict(rank=16, learn_rate="1e-3", steps=2000, batch_size=4,
                      unet_modules=[*UNET_MODULES, "conv1", "conv2"])


def subject_request(env: TrainingEnv, name: str, seed: int) -> TrainEmbeddingRequest:
    """The textual-inversion run for embedding `name`; writes its pictures (large orange triangles on eight
    backgrounds at three positions, captions without colour or shape) and prompt template under ``env.data_dir``."""
    data = env.data_dir / "subject"
    if not data.exists():
        world.save_dataset(data, [
            (world.Scene("triangle", "orange", background, position, "large"),
             f"on a {background} background {world.POSITION_PHRASES[position]}")
            for background, position in itertools.product(SUBJECT_BACKGROUNDS, ("center", "left", "right"))])
    templates = env.data_dir / "textual_inversion_templates"
    templates.mkdir(exist_ok=True)
    (templates / SUBJECT_TEMPLATE_FILE).write_text(SUBJECT_TEMPLATE)
    return TrainEmbeddingRequest(embedding_name=name, data_root=str(data), training_width=env.model.native_size,
                                 training_height=env.model.native_size, template_filename=SUBJECT_TEMPLATE_FILE,
                                 save_embedding_every=0, create_image_every=0, seed=seed, **SUBJECT_TRAINING)


def narrow_scenes(rng: random.Random, count: int, jitter: bool = True) -> list[world.Scene]:
    return [world.sample_scene(rng, styles=("narrow",), sizes=("large",), jitter=jitter) for _ in range(count)]


def style_request(env: TrainingEnv, name: str, seed: int, **overrides: Any) -> TrainLoraRequest:
    """The LoRA run `name` (STYLE_TRAINING with `overrides`); writes its 64 captioned pictures under
    ``env.data_dir``."""
    data = env.data_dir / "narrow"
    if not data.exists():
        rng = random.Random(0)
        world.save_dataset(data, [(scene, world.caption(scene, rng)) for scene in narrow_scenes(rng, 64)])
    return TrainLoraRequest(name=name, data_root=str(data), seed=seed, **{**STYLE_TRAINING, **overrides})


def generate(env: TrainingEnv, prompt: str, seeds: tuple[int, ...]) -> list[Image.Image]:
    """txt2img at the model's native size (20 steps, CFG 6) with the env's embeddings and LoRAs in reach."""
    resources = PromptResources(embeddings=EmbeddingLibrary(env.embeddings_dir).for_model(env.model),
                                networks={"lora": lora.LoraNetwork(env.loras)})
    images = []
    for seed in seeds:
        p = StableDiffusionProcessingTxt2Img(prompt=prompt, seed=seed, steps=20, cfg_scale=6,
                                             width=env.model.native_size, height=env.model.native_size,
                                             do_not_save_samples=True, do_not_save_grid=True)
        p.sd_model, p.opts, p.state, p.prompt_resources = env.model, env.opts, JobState(), resources
        images.append(process_images(p).images[0])
    return images


def subject_share(env: TrainingEnv, name: str, seeds: tuple[int, ...]) -> float:
    """Share of "a NAME on a … background" images that show an orange triangle."""
    readings = [analyser.analyse(image) for background in SUBJECT_EVAL_BACKGROUNDS
                for image in generate(env, f"a {name} on a {background} background", seeds)]
    return float(np.mean([(a.color, a.shape) == ("orange", "triangle") for a in readings]))


def style_shares(env: TrainingEnv, name: str, prompts: int, seeds: tuple[int, ...], eval_seed: int = 1
                 ) -> dict[str, float]:
    """Full captions of `prompts` narrow scenes, each at `seeds`, with ``<lora:NAME:1>`` and ``<lora:NAME:0>``:
    the share of narrow images at each weight, and of the prompt's colour and shape at weight 1."""
    scenes = narrow_scenes(random.Random(eval_seed), prompts, jitter=False)

    def read(weight: float) -> list[tuple[world.Scene, analyser.Analysis]]:
        return [(scene, analyser.analyse(image)) for scene in scenes
                for image in generate(env, f"{world.caption(scene, template=2)} <lora:{name}:{weight}>", seeds)]

    with_lora, without = read(1), read(0)
    return {"narrow at 1": float(np.mean([a.style == "narrow" for _, a in with_lora])),
            "narrow at 0": float(np.mean([a.style == "narrow" for _, a in without])),
            "colour at 1": float(np.mean([a.color == scene.color for scene, a in with_lora])),
            "shape at 1": float(np.mean([a.shape == scene.shape for scene, a in with_lora]))}
