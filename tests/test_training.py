"""Train tab backend on the tiny models: embedding files, TI and LoRA training, interrupt/resume, bad input.

Datasets are world scenes rendered at 64×64. Runs are a few steps; "learning" is checked on a fixed evaluation batch
(fixed image, prompt, noise and timesteps), so it does not depend on the noise drawn during training.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file

from modules import conditioning, lora, world
from modules.conditioning import tokenize_prompt
from modules.extra_networks import EmbeddingLibrary, PromptResources
from modules.job_queue import JobOutput, JobQueue, JobStatus
from modules.options import Options
from modules.paths import Paths
from modules.processing import StableDiffusionProcessingTxt2Img, process_images
from modules.progress import JobState
from modules.textual_inversion import EmbeddingDatabase, read_embedding_file
from modules.training import (CreateEmbeddingRequest, LearnRateSchedule, TrainEmbeddingRequest, TrainingEnv,
                              TrainLoraRequest, create_embedding, parse_learn_rate, train_embedding, train_lora)
from modules.training.common import DiffusionObjective, encode_prompts, model_modules
from modules.training.dataset import (TEMPLATES_DIR, LatentCache, PromptTemplate, load_images, read_captions,
                                      words_from_file_name)

pytestmark = pytest.mark.usefixtures("single_torch_thread")

SCENE = world.Scene("circle", "red", "blue", "center", "large", "striped")


# --------------------------------------------------------------------------------------------------------------------
# Fixtures and helpers


def write_dataset(folder: Path, count: int, *, captions: bool = True, seed: int = 0) -> Path:
    rng = random.Random(seed)
    scenes = [SCENE] if count == 1 else [world.sample_scene(rng, styles=("striped",)) for _ in range(count)]
    return world.save_dataset(folder, [(scene, world.caption(scene) if captions else None) for scene in scenes])


@pytest.fixture(scope="module")
def one_image(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("one-image"), 1)


@pytest.fixture(scope="module")
def four_images(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("four-images"), 4)


@pytest.fixture
def env(tmp_path, tiny_sd1_model) -> TrainingEnv:
    """The shared tiny SD1 model with fresh folders; a template "[name]" alone; no adapters left afterwards."""
    templates = tmp_path / "textual_inversion_templates"
    templates.mkdir()
    (templates / "name_only.txt").write_text("[name]\n")
    yield TrainingEnv(tiny_sd1_model, tmp_path / "embeddings", tmp_path / "Lora", tmp_path,
                      Options(samples_save=False, live_previews_enable=False), lora.LoraLibrary(tmp_path / "Lora"))
    lora.unload(tiny_sd1_model)


def snapshot(model) -> dict[str, torch.Tensor]:
    return {f"{name}.{key}": value.clone() for name, module in model_modules(model).items()
            for key, value in module.state_dict().items()}


def assert_same_weights(model, before: dict[str, torch.Tensor]) -> None:
    after = snapshot(model)
    assert after.keys() == before.keys()
    assert all(torch.equal(before[key], after[key]) for key in before)
    assert not any(parameter.requires_grad or parameter.grad is not None
                   for module in model_modules(model).values() for parameter in module.parameters())
    assert not lora.has_adapter_layers(model.pipe)


def evaluation_loss(model, image_folder: Path, prompt: str, embeddings=None, samples: int = 16) -> float:
    """The denoising loss of ``prompt`` on the folder's first image at fixed noise and timesteps."""
    image = load_images(sorted(image_folder.glob("*.png"))[:1], 64, 64)
    latents = LatentCache(model, image, "deterministic", torch.Generator()).mean.repeat(samples, 1, 1, 1)
    objective = DiffusionObjective(model)
    noise, timesteps = objective.draw(latents, torch.Generator().manual_seed(123))
    with torch.no_grad():
        cond = encode_prompts(model, [prompt] * samples, embeddings=embeddings)
        return objective.loss(latents, cond, noise, timesteps).item()


def database_of(model, path: Path) -> EmbeddingDatabase:
    database = EmbeddingDatabase()
    assert database.add(read_embedding_file(path), model)
    return database


def ti_request(data_root: Path, **overrides) -> TrainEmbeddingRequest:
    values = dict(embedding_name="stripes", data_root=str(data_root), training_width=64, training_height=64,
                  steps=30, learn_rate="0.05", template_filename="name_only.txt", save_embedding_every=0,
                  create_image_every=0, latent_sampling_method="deterministic", seed=0)
    return TrainEmbeddingRequest(**(values | overrides))


def lora_request(data_root: Path, **overrides) -> TrainLoraRequest:
    values = dict(name="striped", data_root=str(data_root), steps=30, learn_rate="5e-3",
                  latent_sampling_method="deterministic", seed=0)
    return TrainLoraRequest(**(values | overrides))


@dataclass
class InterruptAt(JobState):
    """A job state whose user presses Interrupt once ``stop_at`` steps are done."""

    stop_at: int = 0

    def __setattr__(self, name: str, value) -> None:
        super().__setattr__(name, value)
        if name == "sampling_step" and value == getattr(self, "stop_at", None):
            self.interrupt()


# --------------------------------------------------------------------------------------------------------------------
# Learning-rate schedules


def test_learn_rate_schedule_follows_a1111_syntax():
    schedule = LearnRateSchedule("0.005:100, 1e-3:1000, 1e-5", 2000)
    assert list(schedule) == [(0.005, 100), (1e-3, 1000), (1e-5, 2000)]
    assert (schedule.rate_at(1), schedule.rate_at(100), schedule.rate_at(101), schedule.rate_at(2000)) == \
        (0.005, 0.005, 1e-3, 1e-5)
    assert list(LearnRateSchedule("0.005", 50)) == [(0.005, 50)]
    assert LearnRateSchedule("0.01:10, 0.001:20", 100).last_step == 20  # the schedule ends training
    assert list(LearnRateSchedule("0.01:10, 0.001:20, 1e-4", 15)) == [(0.01, 10), (0.001, 15)]


@pytest.mark.parametrize("text,problem", [
    ("", "empty"), ("abc", "not a number"), ("0.01:ten", "not a whole number"), ("0.01:10, 0.001", None),
    ("0.01, 0.001:10", "only the last entry"), ("0.01:20, 0.001:10", "must come after"), ("-0.1", "positive"),
    ("0.01:0", "positive"), ("nan", "positive"),
])
def test_bad_learn_rate_schedules_are_named(text, problem):
    if problem is None:
        parse_learn_rate(text, 100)
        return
    with pytest.raises(ValueError, match=f"^learn_rate: .*{problem}"):
        parse_learn_rate(text, 100)


# --------------------------------------------------------------------------------------------------------------------
# Datasets and templates


def test_captions_come_from_txt_files_then_metadata_jsonl(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        world.render(SCENE).save(tmp_path / name)
    (tmp_path / "a.txt").write_text("from txt\n")
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "a.png", "text": "ignored"}\n'
                                             '{"file_name": "b.png", "text": "from metadata"}\n')
    captions = read_captions(sorted(tmp_path.glob("*.png")))
    assert {path.name: text for path, text in captions.items()} == {"a.png": "from txt", "b.png": "from metadata"}
    assert words_from_file_name(Path("00012-a_red_circle.png")) == "a red circle"


def test_images_of_mixed_sizes_are_resized_to_the_training_size(tmp_path):
    world.render(SCENE).save(tmp_path / "small.png")
    world.render(SCENE, size=128).crop((0, 0, 128, 96)).save(tmp_path / "wide.png")
    images = load_images(sorted(tmp_path.glob("*.png")), 64, 64)
    assert [image.size for image in images] == [(64, 64), (64, 64)]
    assert all(image.mode == "RGB" for image in images)


def test_template_fills_name_and_shuffles_and_drops_tags():
    template = PromptTemplate(("a [name], [filewords]",))
    rng = random.Random(0)
    assert template.render(rng, "stripes", "red, circle") == "a stripes, red, circle"
    shuffled = {template.render(rng, "x", "a, b, c, d", shuffle_tags=True) for _ in range(20)}
    assert len(shuffled) > 1 and all(sorted(s[5:].split(", ")) == ["a", "b", "c", "d"] for s in shuffled)
    assert template.render(rng, "x", "a, b, c", tag_drop_out=1.0) == "a x, "


def test_shipped_templates_use_the_placeholders(tmp_path):
    for name, needs_filewords in (("subject.txt", False), ("subject_filewords.txt", True), ("style.txt", False),
                                  ("style_filewords.txt", True), ("none.txt", False)):
        template = PromptTemplate.load(name, [tmp_path / "missing", TEMPLATES_DIR])
        assert all("[filewords]" in line for line in template.lines) == needs_filewords
        if name != "none.txt":
            assert all("[name]" in line for line in template.lines)


# --------------------------------------------------------------------------------------------------------------------
# Creating embeddings


def test_created_embedding_is_an_a1111_file_usable_at_once(env):
    model = env.model
    library = EmbeddingLibrary(env.embeddings_dir)
    assert "stripes" not in library.for_model(model).database.word_embeddings
    path = create_embedding(env, CreateEmbeddingRequest(name="stripes", num_vectors_per_token=3,
                                                        init_text="red circle"))
    assert path == env.embeddings_dir / "stripes.pt"

    data = torch.load(path, map_location="cpu", weights_only=True)
    assert set(data) == {"string_to_token", "string_to_param", "name", "step", "sd_checkpoint", "sd_checkpoint_name"}
    assert data["name"] == "stripes" and data["step"] == 0
    assert data["sd_checkpoint_name"] == model.sd_checkpoint_info.model_name
    vectors = data["string_to_param"]["*"]
    ids = model.tokenizer("red circle", add_special_tokens=False)["input_ids"]
    table = model.text_encoder.get_input_embeddings().weight
    assert vectors.shape == (3, table.shape[1])
    assert torch.equal(vectors, table[[ids[0], ids[1], ids[0]]])  # the init text's tokens, repeated

    loaded = library.for_model(model)  # the folder changed: read again
    assert "stripes" in loaded.database.word_embeddings
    chunks, count = tokenize_prompt(model.tokenizer, "a stripes circle", embeddings=loaded)
    assert count == 5 and chunks[0].fixes[0][1].name == "stripes"


def test_create_refuses_an_existing_name_unless_overwriting(env):
    create_embedding(env, CreateEmbeddingRequest(name="stripes", init_text="red"))
    with pytest.raises(ValueError, match="^name: an embedding called 'stripes' already exists"):
        create_embedding(env, CreateEmbeddingRequest(name="stripes"))
    path = create_embedding(env, CreateEmbeddingRequest(name="stripes", num_vectors_per_token=2, overwrite_old=True))
    assert read_embedding_file(path).length == 2


@pytest.mark.parametrize("request_fields,message", [
    ({"name": "stripes", "init_text": "a red striped circle", "num_vectors_per_token": 2},
     "^init_text: 'a red striped circle' is 4 tokens, more than num_vectors_per_token \\(2\\)"),
    ({"name": "  "}, "^name: the name is empty"),
    ({"name": "../evil"}, "^name: '../evil' may only hold"),
])
def test_create_rejects_bad_input(env, request_fields, message):
    with pytest.raises(ValueError, match=message):
        create_embedding(env, CreateEmbeddingRequest(**request_fields))
    assert not env.embeddings_dir.exists() or not any(env.embeddings_dir.iterdir())


@pytest.mark.parametrize("vectors", [0, 76])
def test_vector_count_is_1_to_75(vectors):
    with pytest.raises(ValidationError, match="num_vectors_per_token"):
        CreateEmbeddingRequest(name="x", num_vectors_per_token=vectors)


# --------------------------------------------------------------------------------------------------------------------
# Training embeddings


@pytest.mark.parametrize("clip_skip", [1, 2])
def test_training_conditions_the_unet_exactly_as_generation_does(env, clip_skip):
    model = env.model
    path = create_embedding(env, CreateEmbeddingRequest(name="stripes", num_vectors_per_token=2, init_text="red"))
    database = database_of(model, path)
    prompts = ["a stripes circle on a blue background", ", ".join(["a red circle"] * 30)]  # the second: 2 chunks
    with torch.no_grad():
        ours = encode_prompts(model, prompts, clip_skip=clip_skip, embeddings=database)
    generation = conditioning.encode_texts(model, prompts, clip_skip=clip_skip, embeddings=database)
    assert ours.embeds.shape == (2, 154, model.text_encoder.config.hidden_size) and ours.pooled is None
    torch.testing.assert_close(ours.embeds[0, :77], generation[0].embeds)
    torch.testing.assert_close(ours.embeds[0, 77:], generation[0].empty_chunk)  # padded as generation pads
    torch.testing.assert_close(ours.embeds[1], generation[1].embeds)


def test_embedding_training_learns_changes_nothing_else_and_saves_copies_and_previews(env, one_image):
    model = env.model
    path = create_embedding(env, CreateEmbeddingRequest(name="stripes", num_vectors_per_token=2))
    loss_before = evaluation_loss(model, one_image, "stripes", database_of(model, path))
    before = snapshot(model)
    state = JobState()
    result = train_embedding(env, ti_request(one_image, save_embedding_every=15, create_image_every=30), state)

    assert_same_weights(model, before)
    assert (result.path, result.step, result.steps_done, result.interrupted) == (path, 30, 30, False)
    assert evaluation_loss(model, one_image, "stripes", database_of(model, path)) < loss_before - 0.005
    assert read_embedding_file(path).step == 30
    log_dir = env.data_dir / "textual_inversion" / "stripes"
    copies = {p.name: read_embedding_file(p).step for p in (log_dir / "embeddings").iterdir()}
    assert copies == {"stripes-15.pt": 15, "stripes-30.pt": 30}
    preview = log_dir / "images" / "stripes-30.png"
    assert preview in result.files and state.current_image is not None
    assert "TI hashes: " in (state.current_image.info.get("parameters") or "")
    assert (state.sampling_step, state.sampling_steps) == (30, 30)
    assert state.textinfo.startswith("Training embedding stripes: step 30/30, loss ")
    # copies live outside the embeddings folder, so they are no trigger words
    assert list(EmbeddingLibrary(env.embeddings_dir).for_model(model).database.word_embeddings) == ["stripes"]


def test_interrupt_saves_the_steps_done_and_training_resumes_from_the_file(env, four_images):
    create_embedding(env, CreateEmbeddingRequest(name="stripes"))
    request = ti_request(four_images, steps=10, batch_size=2, gradient_step=2, template_filename="subject.txt",
                         latent_sampling_method="random", shuffle_tags=True, tag_drop_out=0.2)
    interrupted = train_embedding(env, request, InterruptAt(stop_at=3))
    assert (interrupted.step, interrupted.steps_done, interrupted.interrupted) == (3, 3, True)
    data = torch.load(interrupted.path, weights_only=True)
    assert data["step"] == 3 and data["string_to_param"]["*"].shape[0] == 1

    resumed = train_embedding(env, request.model_copy(update={"steps": 5}), JobState())
    assert (resumed.step, resumed.steps_done, resumed.interrupted) == (5, 2, False)
    assert read_embedding_file(resumed.path).step == 5
    with pytest.raises(ValueError, match="^steps: 'stripes' is already trained to step 5"):
        train_embedding(env, request.model_copy(update={"steps": 5}), JobState())


def test_embedding_training_on_v_prediction_and_sdxl_models(tmp_path, tiny_models_dir, make_manager, one_image):
    manager = make_manager(tiny_models_dir)
    for checkpoint in ("sd2-v.safetensors", "sdxl.safetensors"):
        model = manager.load(checkpoint)
        env = TrainingEnv(model, tmp_path / checkpoint / "embeddings", tmp_path / checkpoint / "Lora",
                          tmp_path / checkpoint, Options(samples_save=False))
        path = create_embedding(env, CreateEmbeddingRequest(name="stripes", num_vectors_per_token=2))
        with torch.no_grad():
            ours = encode_prompts(model, ["a stripes circle"], embeddings=database_of(model, path))
        generation = conditioning.encode_texts(model, ["a stripes circle"], embeddings=database_of(model, path))[0]
        torch.testing.assert_close(ours.embeds[0], generation.embeds)
        if model.is_sdxl:
            torch.testing.assert_close(ours.pooled[0], generation.pooled)
        before = snapshot(model)
        result = train_embedding(env, ti_request(one_image, steps=2, template_filename="subject.txt"), JobState())
        assert_same_weights(model, before)
        assert result.step == 2 and result.loss is not None
        embedding = read_embedding_file(path)
        assert set(embedding.vectors) == ({"text_encoder", "text_encoder_2"} if model.is_sdxl else {"text_encoder"})
        if model.is_sdxl:
            assert {"clip_l", "clip_g"} <= set(torch.load(path, weights_only=True))
        assert DiffusionObjective(model).scheduler.config.prediction_type == model.prediction_type


def test_training_runs_as_a_queue_job_with_progress_and_interrupt(tmp_path, tiny_sd1_model, four_images):
    paths = Paths.from_args(data_dir=tmp_path)
    runtime = SimpleNamespace(models=SimpleNamespace(current=tiny_sd1_model), paths=paths,
                              opts=Options(samples_save=False), loras=lora.LoraLibrary(paths.lora_dir))
    create_embedding(runtime, CreateEmbeddingRequest(name="stripes"))
    request = ti_request(four_images, steps=10000, template_filename="subject.txt")

    def job(state: JobState) -> JobOutput:
        result = train_embedding(runtime, request, state)
        return JobOutput(value=result, infotext=result.message, files=[str(path) for path in result.files])

    queue = JobQueue(tmp_path / "history.sqlite3")
    try:
        task = queue.submit("train-embedding", request.model_dump(), job)
        deadline = time.monotonic() + 60
        while not (queue.progress(task.id).textinfo or "").startswith("Training embedding stripes: step "):
            assert time.monotonic() < deadline, "no training progress reported"
            time.sleep(0.05)
        assert 0 < queue.progress(task.id).progress < 1
        queue.cancel(task.id)  # the running job is interrupted
        result = task.result(timeout=60).value
        assert result.interrupted and 0 < result.step < 10000 and result.path == paths.embeddings_dir / "stripes.pt"
        assert read_embedding_file(result.path).step == result.step
        entry = queue.history_entry(task.id)
        assert entry.status == JobStatus.INTERRUPTED and entry.infotext.startswith("Training interrupted at step ")
    finally:
        queue.close()


# --------------------------------------------------------------------------------------------------------------------
# Training LoRA


def generate(model, lora_dir: Path, prompt: str) -> np.ndarray:
    p = StableDiffusionProcessingTxt2Img(prompt=prompt, steps=4, width=64, height=64, seed=7, sampler_name="Euler",
                                         do_not_save_samples=True, do_not_save_grid=True)
    p.sd_model, p.opts, p.state = model, Options(samples_save=False), JobState()
    p.prompt_resources = PromptResources(networks={"lora": lora.LoraNetwork(lora.LoraLibrary(lora_dir))})
    return np.asarray(process_images(p).images[0], dtype=np.int16)


def test_lora_training_learns_saves_a_kohya_file_and_restores_the_model(env, one_image):
    model = env.model
    caption = (one_image / "000.txt").read_text()
    loss_before = evaluation_loss(model, one_image, caption)
    before = snapshot(model)
    state = JobState()
    result = train_lora(env, lora_request(one_image, rank=4, alpha=2), state)

    assert_same_weights(model, before)
    path = env.lora_dir / "striped.safetensors"
    assert (result.path, result.step, result.interrupted) == (path, 30, False)
    assert state.textinfo.startswith("Training LoRA striped: step 30/30")
    tensors = load_file(path)
    assert all(key.startswith("lora_unet_") for key in tensors)
    assert any(key.endswith("attn2_to_k.lora_down.weight") for key in tensors)
    assert {float(value) for key, value in tensors.items() if key.endswith(".alpha")} == {2.0}
    assert lora.read_metadata(path)["ss_network_dim"] == "4"
    assert [item["name"] for item in env.loras.api_listing()] == ["striped"]

    model.pipe.load_lora_weights(str(path), adapter_name="check")  # diffusers reads the kohya file
    assert evaluation_loss(model, one_image, caption) < loss_before - 0.05
    lora.unload(model)

    base = generate(model, env.lora_dir, caption)
    assert np.abs(generate(model, env.lora_dir, f"{caption} <lora:striped:1>") - base).mean() > 0.5
    assert np.array_equal(generate(model, env.lora_dir, f"{caption} <lora:striped:0>"), base)


def test_lora_with_text_encoder_interrupt_and_sdxl(env, one_image, tiny_models_dir, make_manager, tmp_path):
    result = train_lora(env, lora_request(one_image, steps=10, train_text_encoder=True), InterruptAt(stop_at=2))
    assert (result.step, result.interrupted) == (2, True)
    keys = set(load_file(result.path))
    assert any(key.startswith("lora_te_text_model_encoder_layers_0_self_attn_q_proj.") for key in keys)
    assert lora.read_metadata(result.path)["ss_steps"] == "2"
    assert not lora.has_adapter_layers(env.model.pipe)

    sdxl = make_manager(tiny_models_dir).load("sdxl.safetensors")
    sdxl_env = TrainingEnv(sdxl, tmp_path / "sdxl-emb", tmp_path / "sdxl-lora", tmp_path)
    before = snapshot(sdxl)
    saved = train_lora(sdxl_env, lora_request(one_image, steps=2, train_text_encoder=True), JobState())
    assert_same_weights(sdxl, before)
    prefixes = {key.split("_text_model")[0] for key in load_file(saved.path) if key.startswith("lora_te")}
    assert prefixes == {"lora_te1", "lora_te2"}
    sdxl.pipe.load_lora_weights(str(saved.path), adapter_name="check")
    assert set(sdxl.pipe.get_list_adapters()) == {"unet", "text_encoder", "text_encoder_2"}
    lora.unload(sdxl)


def test_lora_on_resnet_convolutions_with_min_snr(env, one_image):
    result = train_lora(env, lora_request(one_image, steps=3, unet_modules=["conv1", "conv2"], min_snr_gamma=5),
                        JobState())
    keys = set(load_file(result.path))
    assert any(key.endswith("resnets_0_conv1.lora_down.weight") for key in keys)
    assert not any("attn" in key for key in keys)
    env.model.pipe.load_lora_weights(str(result.path), adapter_name="check")  # diffusers reads kohya conv keys
    assert lora.has_adapter_layers(env.model.pipe)
    lora.unload(env.model)


def test_lora_training_is_reproducible_from_its_seed(env, one_image):
    def train(seed: int) -> dict[str, torch.Tensor]:
        return load_file(train_lora(env, lora_request(one_image, steps=3, seed=seed, overwrite=True), JobState()).path)

    first, again, other = train(3), train(3), train(4)
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert any(not torch.equal(first[key], other[key]) for key in first)


def test_min_snr_weighting_discounts_the_nearly_clean_steps(tiny_sd1_model, one_image):
    image = load_images(sorted(one_image.glob("*.png"))[:1], 64, 64)
    latents = LatentCache(tiny_sd1_model, image, "deterministic", torch.Generator()).mean
    cond = encode_prompts(tiny_sd1_model, ["a shape"])
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(0))
    plain, weighted = DiffusionObjective(tiny_sd1_model), DiffusionObjective(tiny_sd1_model, min_snr_gamma=5)
    alphas = plain.scheduler.alphas_cumprod
    ratios = {}
    with torch.no_grad():
        for t in (10, 950):
            timesteps = torch.tensor([t])
            ratios[t] = float(weighted.loss(latents, cond, noise, timesteps) / plain.loss(latents, cond, noise, timesteps))
    snr = float(alphas[10] / (1 - alphas[10]))
    assert ratios[10] == pytest.approx(5 / snr, rel=1e-4) and ratios[10] < 0.1  # nearly clean: counts far less
    assert ratios[950] == pytest.approx(1.0, rel=1e-4)  # noisy (SNR < 5): unchanged


# --------------------------------------------------------------------------------------------------------------------
# Bad input: a clear error naming the field, before any training


def test_bad_training_input_is_refused_before_training(env, one_image, tmp_path):
    create_embedding(env, CreateEmbeddingRequest(name="stripes"))
    empty = tmp_path / "empty"
    empty.mkdir()
    no_captions = write_dataset(tmp_path / "no-captions", 2, captions=False)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.png").write_bytes(b"not a png")
    before = snapshot(env.model)
    embedding_cases = [
        (dict(data_root=str(tmp_path / "missing")), "^data_root: dataset folder .* does not exist"),
        (dict(data_root=str(empty)), "^data_root: dataset folder .* holds no images"),
        (dict(data_root=str(broken)), "^data_root: cannot read image x.png"),
        (dict(embedding_name="nope"), "^embedding_name: no embedding called 'nope'"),
        (dict(template_filename="nope.txt"), "^template_filename: no prompt template 'nope.txt'"),
        (dict(preview_from_txt2img=True, create_image_every=5, preview_sampler_name="Nope"),
         "^preview_sampler_name: "),
    ]
    for fields, message in embedding_cases:
        with pytest.raises(ValueError, match=message):
            train_embedding(env, ti_request(**({"data_root": one_image} | fields)), JobState())
    lora_cases = [
        (dict(data_root=str(no_captions)), "^data_root: 2 image\\(s\\) have no caption \\(000.png, 001.png\\)"),
        (dict(data_root=str(empty)), "^data_root: dataset folder .* holds no images"),
    ]
    for fields, message in lora_cases:
        with pytest.raises(ValueError, match=message):
            train_lora(env, lora_request(**({"data_root": one_image} | fields)), JobState())
    env.lora_dir.mkdir()
    (env.lora_dir / "striped.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="^name: a LoRA called 'striped' already exists"):
        train_lora(env, lora_request(one_image), JobState())
    assert_same_weights(env.model, before)
    assert read_embedding_file(env.embeddings_dir / "stripes.pt").step == 0


@pytest.mark.parametrize("fields,field", [
    ({"learn_rate": "0.01:abc"}, "learn_rate"),
    ({"learn_rate": "0.01:200, 0.001:100"}, "learn_rate"),
    ({"clip_grad_mode": "norm", "clip_grad_value": "x"}, "clip_grad_value"),
    ({"steps": 0}, "steps"),
    ({"batch_size": 0}, "batch_size"),
    ({"gradient_step": -1}, "gradient_step"),
    ({"training_width": 100}, "training_width"),
    ({"latent_sampling_method": "sometimes"}, "latent_sampling_method"),
    ({"varsize": True}, "varsize"),
    ({"use_weight": True}, "use_weight"),
    ({"tag_drop_out": 1.5}, "tag_drop_out"),
])
def test_bad_embedding_request_fields_are_named(one_image, fields, field):
    with pytest.raises(ValidationError, match=field):
        ti_request(one_image, **fields)


@pytest.mark.parametrize("fields,field", [
    ({"steps": -5}, "steps"), ({"batch_size": 0}, "batch_size"), ({"rank": 0}, "rank"),
    ({"learn_rate": "fast"}, "learn_rate"), ({"unet_modules": []}, "unet_modules"),
    ({"unet_modules": ["conv_in"]}, "unet_modules"), ({"alpha": 0}, "alpha"), ({"min_snr_gamma": 0}, "min_snr_gamma"),
])
def test_bad_lora_request_fields_are_named(one_image, fields, field):
    with pytest.raises(ValidationError, match=field):
        lora_request(one_image, **fields)
