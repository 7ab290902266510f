"""Textual inversion: create an embedding (A1111's Train ▸ Create embedding) and train it (Train ▸ Train).

Files are A1111's ``.pt`` layout, written with ``torch.save`` of plain tensors, numbers and strings only (so
``torch.load(weights_only=True)`` reads them) and always atomically:

- SD1/SD2: ``{"string_to_token": {"*": id}, "string_to_param": {"*": [n, C]}, "name", "step", "sd_checkpoint",
  "sd_checkpoint_name"}``;
- SDXL: ``{"clip_l": [n, 768], "clip_g": [n, 1280], "name", "step", ...}`` (one set of vectors per text encoder,
  which A1111 and ``modules.textual_inversion`` read). The SDXL refiner has no ``clip_l`` encoder and is refused.

A new embedding starts from the token embeddings of its initialization text, repeated to fill the vectors; a text
of more tokens than vectors is an error. It lands in ``models/embeddings`` and is usable in prompts at once (the
embeddings folder is reloaded when its files change).

Training optimises only the embedding's vectors (every model weight stays frozen, bit for bit) with AdamW on the
denoising loss of the model's own noise schedule. Prompts come from a template (``[name]`` = the embedding's name,
``[filewords]`` = the image's caption or file name). Every ``save_embedding_every`` steps the embedding's file is
rewritten with the step reached and a copy ``<name>-<step>.pt`` is kept in ``<log_directory>/<name>/embeddings``
(outside the embeddings folder, so copies never become trigger words); every ``create_image_every`` steps a preview
is generated through ``modules.processing`` with the embedding, saved to ``<log_directory>/<name>/images`` and shown
as the job's live preview. An interrupted run saves what it has. Training again resumes at the step stored in the
file (the optimizer's moments start afresh).

Not supported, refused before training: ``varsize`` (images are always resized to the training size) and
``use_weight`` (PNG alpha as loss weight). ``save_image_with_stored_embedding`` is accepted for API compatibility;
previews carry their infotext, not the embedding.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modules import rng as seeds
from modules.conditioning import Embedding, prompt_tokenizer
from modules.progress import JobState
from modules.textual_inversion import EMBEDDING_SUFFIXES, ENCODER_KEYS, EmbeddingDatabase, read_embedding_file
from modules.training.common import (DiffusionObjective, GradientClipping, TrainingEnv, TrainResult, atomic_save,
                                     check_name, check_trainable, encode_prompts, frozen_model, resolve_dir,
                                     resolve_env, run_steps)
from modules.training.dataset import (BatchOrder, LatentCache, PromptTemplate, list_images, load_images,
                                      read_captions, template_dirs, words_from_file_name)
from modules.training.lr_schedule import LearnRateSchedule

if TYPE_CHECKING:
    from modules.runtime import Runtime

MAX_VECTORS = 75
PREVIEW_DEFAULTS = {"steps": 20, "sampler_name": "Euler a", "cfg_scale": 7.0, "seed": -1}
"""Preview settings when ``preview_from_txt2img`` is off (the size is then the training size)."""
FILE_KEYS = {"text_encoder": "clip_l", "text_encoder_2": "clip_g"}
"""SDXL files keep one tensor per encoder under these names."""


# --------------------------------------------------------------------------------------------------------------------
# Requests (A1111's /sdapi/v1/create/embedding and /sdapi/v1/train/embedding bodies)


class CreateEmbeddingRequest(BaseModel):
    """Train ▸ Create embedding."""

    model_config = ConfigDict(extra="forbid")

    name: str
    num_vectors_per_token: int = Field(1, ge=1, le=MAX_VECTORS)
    overwrite_old: bool = False
    init_text: str = "*"


class TrainEmbeddingRequest(BaseModel):
    """Train ▸ Train, for an embedding. Defaults are A1111's UI defaults; ``seed`` (ours) fixes the run's randomness."""

    model_config = ConfigDict(extra="forbid")

    id_task: str | None = None
    """A1111's API passes its task id here; the queue may use it as the job's task id."""
    embedding_name: str
    learn_rate: str = "0.005"
    """A rate or an A1111 schedule, ``"0.005:100, 1e-3:1000, 1e-5"``."""
    batch_size: int = Field(1, ge=1)
    gradient_step: int = Field(1, ge=1)
    data_root: str
    log_directory: str = "textual_inversion"
    training_width: int = Field(512, ge=8, le=2048)
    training_height: int = Field(512, ge=8, le=2048)
    varsize: bool = False
    steps: int = Field(100000, ge=1)
    clip_grad_mode: Literal["disabled", "value", "norm"] = "disabled"
    clip_grad_value: str = "0.1"
    shuffle_tags: bool = False
    tag_drop_out: float = Field(0.0, ge=0.0, le=1.0)
    latent_sampling_method: Literal["once", "deterministic", "random"] = "once"
    use_weight: bool = False
    create_image_every: int = Field(500, ge=0)
    save_embedding_every: int = Field(500, ge=0)
    template_filename: str = "style_filewords.txt"
    save_image_with_stored_embedding: bool = True
    preview_from_txt2img: bool = False
    preview_prompt: str = ""
    preview_negative_prompt: str = ""
    preview_steps: int = Field(20, ge=1, le=150)
    preview_sampler_name: str = "Euler a"
    preview_cfg_scale: float = Field(7.0, ge=1.0, le=30.0)
    preview_seed: int = -1
    preview_width: int = Field(512, ge=8, le=2048)
    preview_height: int = Field(512, ge=8, le=2048)
    seed: int = -1

    @field_validator("learn_rate", "clip_grad_value", mode="before")
    @classmethod
    def _number_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, (int, float)) else value

    @field_validator("training_width", "training_height", "preview_width", "preview_height")
    @classmethod
    def _multiple_of_8(cls, value: int, info: Any) -> int:
        if value % 8:
            raise ValueError(f"{info.field_name} must be a multiple of 8 (got {value})")
        return value

    @model_validator(mode="after")
    def _check(self) -> TrainEmbeddingRequest:
        if self.varsize:
            raise ValueError("varsize: training at each image's own size is not supported; images are resized to "
                             "training_width x training_height")
        if self.use_weight:
            raise ValueError("use_weight: using PNG alpha as loss weight is not supported")
        LearnRateSchedule(self.learn_rate, self.steps, field="learn_rate")
        if self.clip_grad_mode != "disabled":
            LearnRateSchedule(self.clip_grad_value, self.steps, field="clip_grad_value")
        return self


# --------------------------------------------------------------------------------------------------------------------
# Files


def embedding_files(directory: Path, name: str) -> list[Path]:
    """The files under ``directory`` (sub-folders too) that define the trigger word ``name``."""
    if not directory.is_dir():
        return []
    return sorted(path for path in directory.rglob("*")
                  if path.stem == name and path.suffix in EMBEDDING_SUFFIXES and path.is_file())


def _encoder_keys(model: Any) -> list[str]:
    return [key for key in ENCODER_KEYS if getattr(model, key) is not None]


def _file_data(model: Any, name: str, vectors: dict[str, torch.Tensor], step: int) -> dict[str, Any]:
    plain = {key: value.detach().to("cpu", torch.float32).clone().contiguous() for key, value in vectors.items()}
    if model.is_sdxl:
        data: dict[str, Any] = {FILE_KEYS[key]: value for key, value in plain.items()}
    else:
        star = prompt_tokenizer(model)("*", add_special_tokens=False)["input_ids"][0]
        data = {"string_to_token": {"*": star}, "string_to_param": {"*": plain["text_encoder"]}}
    info = model.sd_checkpoint_info
    return data | {"name": name, "step": step, "sd_checkpoint": model.sd_model_hash,
                   "sd_checkpoint_name": info.model_name}


def save_embedding(path: Path, model: Any, name: str, vectors: dict[str, torch.Tensor], step: int) -> Path:
    """Write the embedding to ``path`` (atomically) in A1111's ``.pt`` layout for ``model``'s family."""
    data = _file_data(model, name, vectors, step)
    return atomic_save(path, lambda temporary: torch.save(data, temporary))


def _initial_vectors(tokenizer: Any, encoder: torch.nn.Module, init_text: str, count: int) -> torch.Tensor:
    ids = tokenizer(init_text, add_special_tokens=False)["input_ids"]
    if len(ids) > count:
        raise ValueError(f"init_text: {init_text!r} is {len(ids)} tokens, more than num_vectors_per_token ({count}); "
                         "use more vectors or a shorter text")
    table = encoder.get_input_embeddings().weight
    if not ids:
        return torch.zeros(count, table.shape[1])
    return table[[ids[i % len(ids)] for i in range(count)]].detach().float().cpu()


def create_embedding(target: Runtime | TrainingEnv, request: CreateEmbeddingRequest) -> Path:
    """Create ``models/embeddings/<name>.pt`` for the current model; returns its path.

    Raises ``ValueError`` naming the field for an unusable name, an existing name without ``overwrite_old``, or an
    init text of more tokens than vectors. With ``overwrite_old`` other files of the same name are removed.
    """
    env = resolve_env(target)
    model = env.model
    name = check_name(request.name, "name")
    if model.family == "sdxl-refiner":
        raise ValueError("model: the SDXL refiner has no clip_l text encoder; create SDXL embeddings with a base model")
    existing = embedding_files(env.embeddings_dir, name)
    if existing and not request.overwrite_old:
        raise ValueError(f"name: an embedding called {name!r} already exists ({existing[0]}); "
                         "choose another name or set overwrite_old")
    tokenizers = {"text_encoder": model.tokenizer, "text_encoder_2": model.tokenizer_2}
    vectors = {key: _initial_vectors(tokenizers[key], getattr(model, key), request.init_text,
                                     request.num_vectors_per_token)
               for key in _encoder_keys(model)}
    path = save_embedding(env.embeddings_dir / f"{name}.pt", model, name, vectors, step=0)
    for other in existing:
        if other != path:
            other.unlink()
    return path


# --------------------------------------------------------------------------------------------------------------------
# Training


def _trainable_embedding(env: TrainingEnv, name: str) -> tuple[Path, Embedding]:
    files = embedding_files(env.embeddings_dir, name)
    if not files:
        raise ValueError(f"embedding_name: no embedding called {name!r} in {env.embeddings_dir}; create it first")
    path = files[-1]  # the one the embeddings folder uses when names repeat
    if path.suffix != ".pt":
        raise ValueError(f"embedding_name: {path.name} is not an A1111 .pt embedding; only those can be trained")
    embedding = read_embedding_file(path)
    if not EmbeddingDatabase().add(embedding, env.model):
        widths = {key: tuple(value.shape) for key, value in embedding.vectors.items()}
        raise ValueError(f"embedding_name: {name!r} (vectors {widths}) does not fit the loaded model "
                         f"({env.model.sd_checkpoint_info.title})")
    return path, embedding


def _preview(env: TrainingEnv, request: TrainEmbeddingRequest, embedding: Embedding, file: Path, prompt: str,
             folder: Path) -> tuple[Path, Any]:
    """Generate a preview with the embedding as it is now; returns the saved image's path and the image."""
    from modules.extra_networks import FileHashes, LoadedEmbeddings, PromptResources
    from modules.images import save_image
    from modules.processing import StableDiffusionProcessingTxt2Img, process_images
    from modules.sd_models import sha256_of_file

    if request.preview_from_txt2img:
        settings = dict(prompt=request.preview_prompt, negative_prompt=request.preview_negative_prompt,
                        steps=request.preview_steps, sampler_name=request.preview_sampler_name,
                        cfg_scale=request.preview_cfg_scale, seed=request.preview_seed,
                        width=request.preview_width, height=request.preview_height)
    else:
        settings = dict(PREVIEW_DEFAULTS, prompt=prompt, width=request.training_width,
                        height=request.training_height)
    database = EmbeddingDatabase()
    database.add(embedding, env.model)
    p = StableDiffusionProcessingTxt2Img(**settings, do_not_save_samples=True, do_not_save_grid=True)
    opts = env.opts.model_copy(update={"live_previews_enable": False})
    p.sd_model, p.opts, p.state = env.model, opts, JobState()
    p.prompt_resources = PromptResources(
        embeddings=LoadedEmbeddings(database, {embedding.name: file}, {}, FileHashes(sha256_of_file)))
    processed = process_images(p)
    image = processed.images[processed.index_of_first_image]
    saved, _ = save_image(image, folder, info=processed.infotexts[processed.index_of_first_image],
                          forced_filename=f"{embedding.name}-{embedding.step}", save_to_dirs=False, opts=opts)
    return Path(saved), image


def _check_preview_sampler(request: TrainEmbeddingRequest) -> None:
    from modules.sd_samplers import resolve

    if request.create_image_every and request.preview_from_txt2img:
        try:
            resolve(request.preview_sampler_name)
        except ValueError as error:
            raise ValueError(f"preview_sampler_name: {error}") from None


def train_embedding(target: Runtime | TrainingEnv, request: TrainEmbeddingRequest, state: JobState) -> TrainResult:
    """Train the embedding ``request.embedding_name`` (a job function: progress, interrupt and previews go through
    ``state``). Returns the embedding's file, the step it holds, the steps done and the last loss.

    Every input problem raises ``ValueError`` naming the field before any training starts.
    """
    env = resolve_env(target)
    model = env.model
    check_trainable(model)
    name = request.embedding_name.strip()
    path, embedding = _trainable_embedding(env, name)
    start = embedding.step or 0
    schedule = LearnRateSchedule(request.learn_rate, request.steps)
    if start >= schedule.last_step:
        raise ValueError(f"steps: {name!r} is already trained to step {start}, and this run would stop at step "
                         f"{schedule.last_step}; raise steps (or extend the learn_rate schedule) to continue")
    clipping = None if request.clip_grad_mode == "disabled" else \
        GradientClipping(request.clip_grad_mode, LearnRateSchedule(request.clip_grad_value, request.steps))
    for side in ("training_width", "training_height"):
        if getattr(request, side) % model.vae_scale_factor:
            raise ValueError(f"{side}: must be a multiple of {model.vae_scale_factor} for this model")
    _check_preview_sampler(request)
    template = PromptTemplate.load(request.template_filename, template_dirs(env.data_dir))
    image_paths = list_images(request.data_root)
    captions = read_captions(image_paths)
    filewords = [captions.get(image) or words_from_file_name(image) for image in image_paths]
    pictures = load_images(image_paths, request.training_width, request.training_height)
    log_dir = resolve_dir(env.data_dir, request.log_directory, env.allowed_output_dirs) / name

    seed = seeds.fixed_seed(request.seed)
    text_rng, generator = random.Random(seed), torch.Generator().manual_seed(seed)
    files: list[Path] = []
    with frozen_model(model):
        latents = LatentCache(model, pictures, request.latent_sampling_method, generator)
        del pictures
        vectors = {key: torch.nn.Parameter(embedding.vectors[key].to(model.device, torch.float32).clone())
                   for key in _encoder_keys(model)}
        lookup = EmbeddingDatabase()
        lookup.add(Embedding(name, vectors), model)
        objective = DiffusionObjective(model)
        order = BatchOrder(len(latents), request.batch_size, text_rng)
        last_prompts: list[str] = []

        def batch_loss() -> torch.Tensor:
            indices = order.next()
            last_prompts[:] = [template.render(text_rng, name, filewords[i], shuffle_tags=request.shuffle_tags,
                                               tag_drop_out=request.tag_drop_out) for i in indices]
            cond = encode_prompts(model, last_prompts, clip_skip=env.opts.CLIP_stop_at_last_layers, embeddings=lookup)
            x0 = latents.batch(indices, generator)
            noise, timesteps = objective.draw(x0, generator)
            return objective.loss(x0, cond, noise, timesteps)

        def after_step(step: int) -> None:
            if request.save_embedding_every and step % request.save_embedding_every == 0:
                save_embedding(path, model, name, vectors, step)
                copy = log_dir / "embeddings" / f"{name}-{step}.pt"
                files.append(save_embedding(copy, model, name, vectors, step))
            if request.create_image_every and step % request.create_image_every == 0:
                current = Embedding(name, {key: value.detach().clone() for key, value in vectors.items()}, step=step)
                preview, image = _preview(env, request, current, path, last_prompts[0], log_dir / "images")
                files.append(preview)
                state.set_current_image(image)

        run = run_steps(list(vectors.values()), batch_loss, first_step=start + 1, last_step=schedule.last_step,
                        learn_rate=schedule, state=state, title=f"Training embedding {name}",
                        gradient_step=request.gradient_step, clipping=clipping, after_step=after_step)
        if run.last_step > start:
            save_embedding(path, model, name, vectors, run.last_step)
    return TrainResult(path=path, step=run.last_step, steps_done=run.last_step - start, loss=run.loss,
                       interrupted=run.interrupted, files=[path, *files])
