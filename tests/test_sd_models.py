"""Checkpoint discovery, hashes, detection, offline loading, LRU switching and failure handling."""
from __future__ import annotations

import gc
import hashlib
import json
import os
import shutil
import socket
import threading
import time
import weakref
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline
from safetensors.torch import save_file

from modules import sd_models
from modules.ldm_convert import convert_vae
from modules.paths import Paths
from modules.sd_models import CheckpointLoadError, CheckpointNotFoundError, detect_family, probe_prediction_type
from tests.fixtures_models import TINY_SD21_SAMPLE_SIZE, build_tiny, ldm_state_dict, write_checkpoint


@pytest.fixture
def no_network(monkeypatch):
    def refuse(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"network access attempted: {address}")
        return original(self, address)
    original = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def models_dir(tmp_path, tiny_models_dir):
    """A private data dir with copies of some tiny checkpoints, for tests that damage or add files."""
    def make(*names: str) -> Path:
        src = Paths.from_args(data_dir=tiny_models_dir).ckpt_dir
        dst = Paths.from_args(data_dir=tmp_path).ckpt_dir
        dst.mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copy(src / name, dst / name)
        return tmp_path
    return make


def _same_weights(expected: torch.nn.Module, loaded: torch.nn.Module) -> bool:
    want, got = expected.state_dict(), loaded.state_dict()
    return set(want) == set(got) and all(torch.equal(v, got[k]) for k, v in want.items())


# -- discovery and detection -----------------------------------------------------------------------------------------

def test_discovers_files_folders_and_skips_vae_and_folder_internals(tiny_models_dir, make_manager):
    manager = make_manager(tiny_models_dir)
    names = [c.name for c in manager.list_checkpoints()]
    assert names == ["inpaint/sd1-inpainting.safetensors", "sd1-diffusers", "sd1-legacy.ckpt", "sd1.safetensors",
                     "sd2-v.safetensors", "sdxl-refiner.safetensors", "sdxl.safetensors"]
    info = manager.get_info("inpaint/sd1-inpainting.safetensors")
    assert info.model_name == "inpaint_sd1-inpainting"
    assert info.name_for_extra == "sd1-inpainting"
    assert Path(info.filename).is_absolute()


def test_detect_family_from_keys():
    unet = "model.diffusion_model.input_blocks.0.0.weight"
    assert detect_family([unet, "cond_stage_model.transformer.text_model.final_layer_norm.weight"]) == "sd1"
    assert detect_family([unet, "cond_stage_model.model.token_embedding.weight"]) == "sd2"
    assert detect_family([unet, "conditioner.embedders.0.transformer.text_model.x",
                          "conditioner.embedders.1.model.positional_embedding"]) == "sdxl"
    assert detect_family([unet, "conditioner.embedders.0.model.text_projection"]) == "sdxl-refiner"
    assert detect_family(["cond_stage_model.transformer.text_model.x"]) is None  # no UNet
    assert detect_family([unet, "something.else"]) is None


@pytest.mark.parametrize("name, family, prediction, pipeline, inpaint", [
    ("sd1.safetensors", "sd1", "epsilon", StableDiffusionPipeline, False),
    ("sd1-legacy.ckpt", "sd1", "epsilon", StableDiffusionPipeline, False),
    ("sd1-diffusers", "sd1", "epsilon", StableDiffusionPipeline, False),
    ("inpaint/sd1-inpainting.safetensors", "sd1", "epsilon", StableDiffusionPipeline, True),
    ("sd2-v.safetensors", "sd2", "v_prediction", StableDiffusionPipeline, False),
    ("sdxl.safetensors", "sdxl", "epsilon", StableDiffusionXLPipeline, False),
    ("sdxl-refiner.safetensors", "sdxl-refiner", "epsilon", StableDiffusionXLImg2ImgPipeline, False),
])
def test_loads_each_family_offline_bit_identical(name, family, prediction, pipeline, inpaint, tiny_models_dir,
                                                  make_manager, no_network):
    assert os.environ["HF_HUB_OFFLINE"] == "1" and not any(Path(os.environ["HF_HOME"]).iterdir())
    model = make_manager(tiny_models_dir).load(name)

    assert type(model.pipe) is pipeline
    assert (model.family, model.prediction_type, model.is_inpaint) == (family, prediction, inpaint)
    assert model.is_sd1 == (family == "sd1") and model.is_sd2 == (family == "sd2")
    assert model.is_sdxl == family.startswith("sdxl")
    assert model.scheduler_config["prediction_type"] == prediction
    assert model.pipe.scheduler.config.prediction_type == prediction
    expected = build_tiny(family, inpaint=inpaint)  # the fixtures' weights, rebuilt from the same seed
    for part, module in expected.modules().items():
        loaded = getattr(model, part)
        assert _same_weights(module, loaded), part
        assert not loaded.training
        assert all(p.dtype == torch.float32 and not p.requires_grad and p.device.type == "cpu" for p in loaded.parameters())
    assert (model.text_encoder_2 is None) == (family in ("sd1", "sd2"))
    assert (model.tokenizer is None) == (family == "sdxl-refiner")
    assert model.device == torch.device("cpu")
    assert model.vae_scale_factor == 2 ** (len(expected.vae.config.block_out_channels) - 1)
    assert model.native_size == model.unet.config.sample_size * model.vae_scale_factor


def test_tokenizers_are_the_real_clip_ones(tiny_sd1_model, tiny_models_dir, make_manager):
    ids = tiny_sd1_model.tokenizer("a photo of an astronaut riding a horse").input_ids
    assert ids == [49406, 320, 1125, 539, 550, 18376, 6765, 320, 4558, 49407]
    assert tiny_sd1_model.tokenizer.pad_token_id == 49407
    xl = make_manager(tiny_models_dir).load("sdxl.safetensors")
    assert (xl.tokenizer.pad_token_id, xl.tokenizer_2.pad_token_id) == (49407, 0)  # OpenCLIP pads with "!"


def test_fp16_checkpoint_loads_as_float32(tmp_path, make_manager):
    ckpt_dir = Paths.from_args(data_dir=tmp_path).ckpt_dir
    ckpt_dir.mkdir(parents=True)
    save_file({k: v.half() for k, v in ldm_state_dict(build_tiny("sd1")).items()}, str(ckpt_dir / "half.safetensors"))
    model = make_manager(tmp_path).load("half.safetensors")
    assert {p.dtype for p in model.unet.parameters()} == {torch.float32}


# -- prediction type -------------------------------------------------------------------------------------------------

class _StubUNet(torch.nn.Module):
    """Answers like a trained model would at t=999: epsilon returns ~the input, v returns ~0.07 of it."""

    def __init__(self, gain: float) -> None:
        super().__init__()
        self.gain = torch.nn.Parameter(torch.tensor(gain))
        self.config = SimpleNamespace(in_channels=4, cross_attention_dim=32)

    def forward(self, x, t, encoder_hidden_states):
        return SimpleNamespace(sample=x * self.gain - 0.1)


def test_probe_tells_epsilon_from_v():
    assert probe_prediction_type(_StubUNet(1.0)) == "epsilon"
    assert probe_prediction_type(_StubUNet(0.07)) == "v_prediction"


@pytest.mark.parametrize("probed, config_name, sample_size", [
    ("v_prediction", "sd21", TINY_SD21_SAMPLE_SIZE), ("epsilon", "sd21-base", 8)])
def test_sd2_without_declaration_is_probed(probed, config_name, sample_size, tmp_path, make_manager, monkeypatch):
    write_checkpoint(build_tiny("sd2"), Paths.from_args(data_dir=tmp_path).ckpt_dir / "sd2.safetensors")
    monkeypatch.setattr(sd_models, "probe_prediction_type", lambda unet: probed)
    model = make_manager(tmp_path).load("sd2.safetensors")
    assert model.prediction_type == model.scheduler_config["prediction_type"] == probed
    assert model.config_dir.name == config_name
    assert model.unet.config.sample_size == sample_size
    assert model.native_size == sample_size * 8


@pytest.mark.parametrize("declaration, expected", [
    ({"metadata": {"modelspec.prediction_type": "epsilon"}}, "epsilon"),
    ({"metadata": {"prediction_type": "v_prediction"}}, "v_prediction"),
    ({"yaml": 'model:\n  params:\n    parameterization: "v"\n'}, "v_prediction"),
    ({"yaml": "model:\n  params:\n    linear_start: 0.00085\n"}, "epsilon"),
    ({"v_pred_key": True}, "v_prediction"),
])
def test_declared_prediction_type_wins(declaration, expected, tmp_path, make_manager, monkeypatch):
    ckpt_dir = Paths.from_args(data_dir=tmp_path).ckpt_dir
    ckpt_dir.mkdir(parents=True)
    sd = ldm_state_dict(build_tiny("sd2"))
    if declaration.get("v_pred_key"):
        sd["v_pred"] = torch.tensor([])
    save_file(sd, str(ckpt_dir / "m.safetensors"), metadata=declaration.get("metadata"))
    if "yaml" in declaration:
        (ckpt_dir / "m.yaml").write_text(declaration["yaml"])
    monkeypatch.setattr(sd_models, "probe_prediction_type", lambda unet: pytest.fail("probed despite a declaration"))
    model = make_manager(tmp_path).load("m.safetensors")
    assert model.prediction_type == model.scheduler_config["prediction_type"] == expected


def test_sd_config_metadata_names_the_config_folder(tmp_path, tiny_configs_dir, make_manager):
    custom = shutil.copytree(tiny_configs_dir / "sd15", tmp_path / "configs" / "tiny-custom")
    scheduler = custom / "scheduler" / "scheduler_config.json"
    scheduler.write_text(json.dumps({**json.loads(scheduler.read_text()), "prediction_type": "v_prediction"}))
    ckpt_dir = Paths.from_args(data_dir=tmp_path).ckpt_dir
    write_checkpoint(build_tiny("sd1"), ckpt_dir / "custom.safetensors", {"sd_config": "tiny-custom"})
    write_checkpoint(build_tiny("sd1"), ckpt_dir / "missing.safetensors", {"sd_config": "no-such-config"})
    manager = make_manager(tmp_path, extra_configs=(tmp_path / "configs",))
    model = manager.load("custom.safetensors")
    assert (model.config_dir, model.prediction_type) == (custom, "v_prediction")
    with pytest.raises(CheckpointLoadError, match="no-such-config"):
        manager.load("missing.safetensors")


# -- titles, hashes, lookup ------------------------------------------------------------------------------------------

def test_title_gets_hash_on_load_and_hash_is_cached(models_dir, make_manager):
    data_dir = models_dir("sd1.safetensors")
    manager = make_manager(data_dir)
    info = manager.get_info("sd1.safetensors")
    assert info.title == "sd1.safetensors" and info.shorthash is None
    path = Path(info.filename)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()

    model = manager.load("sd1")
    assert info.sha256 == sha and info.hash == info.shorthash == sha[:10] == model.sd_model_hash
    assert info.title == f"sd1.safetensors [{sha[:10]}]" == model.sd_checkpoint_info.title
    entries = json.loads(Paths.from_args(data_dir=data_dir).cache_file.read_text())["hashes"]
    assert entries[f"checkpoint/{path}"]["sha256"] == sha

    assert make_manager(data_dir).get_info("sd1.safetensors").title == info.title  # from cache, no hashing
    os.utime(path, (time.time() + 10, time.time() + 10))  # a changed file: the cached hash no longer applies
    assert make_manager(data_dir).get_info("sd1.safetensors").shorthash is None


def test_a_large_checkpoint_loads_without_waiting_for_its_hash(models_dir, make_manager, monkeypatch):
    """A1111 hashes lazily: a big file's first load does not read it twice first. The title and the job's infotext
    have the hash once the background hash is done; a sidecar still makes the load verify first."""
    from modules import infotext
    from modules.processing import StableDiffusionProcessingTxt2Img

    monkeypatch.setattr(sd_models, "BACKGROUND_HASH_BYTES", 0)   # every file counts as large
    gate, hashing, real = threading.Event(), threading.Event(), sd_models.sha256_of_file

    def slow_hash(path):
        hashing.set()
        assert gate.wait(30)
        return real(path)

    monkeypatch.setattr(sd_models, "sha256_of_file", slow_hash)
    data_dir = models_dir("sd1.safetensors")
    manager = make_manager(data_dir)
    info = manager.get_info("sd1.safetensors")
    model = manager.load("sd1")                   # returns while the hash is blocked
    assert hashing.wait(10) and not gate.is_set()
    assert info.sha256 is None and info.title == "sd1.safetensors" and model.sd_model_hash is None
    assert manager.wait_for_hash(info, timeout=0.05) is None
    p = StableDiffusionProcessingTxt2Img(prompt="x", steps=2, width=64, height=64)
    p.sd_model = model
    assert "Model hash" not in infotext.create_infotext(p, [p.prompt], [1], [0], all_negative_prompts=[""])
    gate.set()
    sha = hashlib.sha256(Path(info.filename).read_bytes()).hexdigest()
    assert manager.wait_for_hash(info, timeout=30) == sha
    assert info.title == f"sd1.safetensors [{sha[:10]}]" and model.sd_model_hash == sha[:10]
    assert f"Model hash: {sha[:10]}" in infotext.create_infotext(p, [p.prompt], [1], [0], all_negative_prompts=[""])
    assert manager.calculate_hash(info) == sha

    # with a sidecar the hash is checked before the model is used
    other = make_manager(models_dir("sdxl.safetensors"))
    sdxl = other.get_info("sdxl.safetensors")
    Path(sdxl.filename + ".sha256").write_text("0" * 64 + "\n")
    with pytest.raises(CheckpointLoadError, match="SHA-256 mismatch"):
        other.load("sdxl")


def test_lookup_by_every_a1111_form(models_dir, make_manager):
    manager = make_manager(models_dir("sd1.safetensors", "sdxl.safetensors"))
    info = manager.get_info("sdxl.safetensors")
    manager.calculate_hash(info)
    with open(info.filename, "rb") as f:
        f.seek(0x100000)
        legacy = hashlib.sha256(f.read(0x10000)).hexdigest()[:8]
    assert info.legacy_hash == legacy
    for query in (info.title, info.name, info.model_name, "sdxl", info.shorthash, info.sha256, legacy,
                  "sdxl.safetensors [0123456789]", f"  {info.title} "):
        assert manager.get_info(query) is info, query
    with pytest.raises(CheckpointNotFoundError) as e:
        manager.get_info("nope")
    assert "'nope' not found" in str(e.value) and info.title in str(e.value) and "sd1.safetensors" in str(e.value)


# -- LRU switching and memory ----------------------------------------------------------------------------------------

def test_lru_cache_hits_are_instant_and_evicted_models_are_freed(tiny_models_dir, make_manager):
    manager = make_manager(tiny_models_dir, sd_checkpoints_limit=2)
    a = manager.load("sd1.safetensors")
    b = manager.load("sd2-v.safetensors")
    start = time.perf_counter()
    assert manager.load("sd1.safetensors") is a
    assert time.perf_counter() - start < 0.1
    assert manager.current is a

    b_parts = [weakref.ref(m) for m in (b.unet, b.vae, b.text_encoder, b.pipe)]
    c = manager.load("sdxl.safetensors")  # evicts b, the least recently used
    assert manager.loaded() == [a, c] and manager.current is c
    assert b.pipe is None
    gc.collect()
    assert all(ref() is None for ref in b_parts), "evicted model is still referenced"
    with pytest.raises(RuntimeError, match="unloaded"):
        b.unet

    manager.opts.set("sd_checkpoints_limit", 1)
    assert manager.load("sd1.safetensors") is a
    assert manager.loaded() == [a]
    manager.unload()
    assert manager.current is None and manager.loaded() == [] and a.pipe is None


# -- failures leave the previous model current -----------------------------------------------------------------------

def test_truncated_file_fails_clearly(models_dir, make_manager):
    data_dir = models_dir("sd1.safetensors", "sdxl.safetensors")
    manager = make_manager(data_dir)
    previous = manager.load("sd1.safetensors")
    path = Path(manager.get_info("sdxl.safetensors").filename)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointLoadError, match=r"sdxl\.safetensors.*truncated or corrupt"):
        manager.load("sdxl.safetensors")
    assert manager.current is previous and previous.unet is not None


def test_pickle_that_would_run_code_is_refused_without_running_it(models_dir, make_manager, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    data_dir = models_dir("sd1.safetensors")
    ckpt_dir = Paths.from_args(data_dir=data_dir).ckpt_dir
    torch.save({"state_dict": ldm_state_dict(build_tiny("sd1")), "extra": Payload()}, ckpt_dir / "evil.ckpt")
    manager = make_manager(data_dir)
    previous = manager.load("sd1.safetensors")
    with pytest.raises(CheckpointLoadError) as e:
        manager.load("evil.ckpt")
    message = str(e.value)
    assert "evil.ckpt" in message and "refused" in message and "system" in message and "run code" in message
    assert not marker.exists()
    assert manager.current is previous


def test_training_checkpoint_with_lightning_callback_loads(tmp_path, make_manager, monkeypatch):
    """Old .ckpt files pickle a pytorch_lightning ModelCheckpoint beside the weights; it is read as an inert stand-in."""
    import sys
    import types

    class ModelCheckpoint:
        pass

    ModelCheckpoint.__module__, ModelCheckpoint.__qualname__ = "pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint"
    fake = types.ModuleType(ModelCheckpoint.__module__)
    fake.ModelCheckpoint = ModelCheckpoint
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks", ModelCheckpoint.__module__):
        monkeypatch.setitem(sys.modules, name, fake)
    ckpt_dir = Paths.from_args(data_dir=tmp_path).ckpt_dir
    ckpt_dir.mkdir(parents=True)
    torch.save({"state_dict": ldm_state_dict(build_tiny("sd1")), "callbacks": {ModelCheckpoint: {"best": 0.1}},
                "checkpoint_callback": ModelCheckpoint(), "global_step": 470000}, ckpt_dir / "trained.ckpt")
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks", ModelCheckpoint.__module__):
        monkeypatch.delitem(sys.modules, name)
    assert make_manager(tmp_path).load("trained.ckpt").family == "sd1"


def test_vanished_and_foreign_files_fail_clearly(models_dir, make_manager):
    data_dir = models_dir("sd1.safetensors", "sdxl.safetensors")
    ckpt_dir = Paths.from_args(data_dir=data_dir).ckpt_dir
    save_file({"encoder.conv_in.weight": torch.zeros(1)}, str(ckpt_dir / "not-a-model.safetensors"))
    manager = make_manager(data_dir)
    previous = manager.load("sd1.safetensors")
    os.remove(ckpt_dir / "sdxl.safetensors")
    with pytest.raises(CheckpointLoadError, match=r"sdxl\.safetensors: file not found"):
        manager.load("sdxl.safetensors")
    with pytest.raises(CheckpointLoadError, match="not a Stable Diffusion checkpoint"):
        manager.load("not-a-model.safetensors")
    assert manager.current is previous
    manager.refresh()
    assert [c.name for c in manager.list_checkpoints()] == ["not-a-model.safetensors", "sd1.safetensors"]
    assert manager.current is previous


def test_sha256_sidecar_is_verified(models_dir, make_manager):
    data_dir = models_dir("sd1.safetensors", "sd2-v.safetensors")
    ckpt_dir = Paths.from_args(data_dir=data_dir).ckpt_dir
    good = hashlib.sha256((ckpt_dir / "sd1.safetensors").read_bytes()).hexdigest()
    (ckpt_dir / "sd1.safetensors.sha256").write_text(f"{good}  sd1.safetensors\n")
    (ckpt_dir / "sd2-v.sha256").write_text("0" * 64 + "\n")
    manager = make_manager(data_dir)
    previous = manager.load("sd1.safetensors")
    with pytest.raises(CheckpointLoadError, match=r"sd2-v\.safetensors: SHA-256 mismatch: sd2-v\.sha256 says 0000"):
        manager.load("sd2-v.safetensors")
    assert manager.current is previous


# -- defaults and VAE ------------------------------------------------------------------------------------------------

def test_default_checkpoint_and_select_default(models_dir, make_manager):
    data_dir = models_dir("sd1.safetensors", "sdxl.safetensors")
    ckpt_dir = Paths.from_args(data_dir=data_dir).ckpt_dir
    assert make_manager(data_dir).default_checkpoint().name == "sd1.safetensors"
    manager = make_manager(data_dir, sd_model_checkpoint="sdxl")
    assert manager.default_checkpoint().name == "sdxl.safetensors"
    model = manager.select_default()
    assert model is manager.current and model.family == "sdxl"
    save_file({"x": torch.zeros(1)}, str(ckpt_dir / "zz-default.safetensors"), metadata={"sd_config": "default-tiny"})
    assert make_manager(data_dir, sd_model_checkpoint="gone.safetensors").default_checkpoint().name == "zz-default.safetensors"
    empty = make_manager(data_dir / "empty")
    assert empty.default_checkpoint() is None and empty.select_default() is None


def _write_vae(path: Path, seed: int) -> torch.nn.Module:
    vae = build_tiny("sd1", seed=seed).vae
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in convert_vae(vae.state_dict(), 3).items()}, str(path))
    return vae


def test_vae_override_automatic_and_none(models_dir, make_manager):
    data_dir = models_dir("sd1.safetensors")
    paths = Paths.from_args(data_dir=data_dir)
    other = _write_vae(paths.vae_dir / "other.safetensors", seed=1)
    beside = _write_vae(paths.ckpt_dir / "sd1.vae.safetensors", seed=2)
    own = build_tiny("sd1").vae

    manager = make_manager(data_dir, sd_vae="None")
    assert [v.name for v in manager.list_vaes()] == ["other.safetensors", "sd1.vae.safetensors"]
    assert "sd1.vae.safetensors" not in [c.name for c in manager.list_checkpoints()]
    model = manager.load("sd1.safetensors")
    assert _same_weights(own, model.vae) and model.sd_vae_name is None
    own_vae = model.vae

    manager.apply_vae("other.safetensors")
    assert _same_weights(other, model.vae) and model.sd_vae_name == "other.safetensors"
    sha = hashlib.sha256((paths.vae_dir / "other.safetensors").read_bytes()).hexdigest()
    assert model.sd_vae_hash == sha[:10]

    manager.apply_vae("Automatic")
    assert _same_weights(beside, model.vae) and model.sd_vae_name == "sd1.vae.safetensors"
    manager.apply_vae("None")
    assert model.vae is own_vae and model.vae_info is None

    with pytest.raises(CheckpointLoadError, match="VAE 'missing.pt' not found"):
        manager.apply_vae("missing.pt")
    assert model.vae is own_vae

    manager.opts.set("sd_vae", "other.safetensors")
    manager.unload()
    assert _same_weights(other, manager.load("sd1.safetensors").vae)


def test_reads_stay_responsive_while_a_model_loads(tiny_models_dir, make_manager, monkeypatch):
    manager = make_manager(tiny_models_dir)
    previous = manager.load("sd1.safetensors")
    started, release = threading.Event(), threading.Event()
    real_build = sd_models.build_pipeline

    def slow_build(*args, **kwargs):
        started.set()
        release.wait(10)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(sd_models, "build_pipeline", slow_build)
    loader = threading.Thread(target=manager.load, args=("sdxl.safetensors",))
    loader.start()
    assert started.wait(10)
    t0 = time.perf_counter()
    assert manager.current is previous
    assert len(manager.list_checkpoints()) == 7 and manager.get_info("sd1").name == "sd1.safetensors"
    assert time.perf_counter() - t0 < 0.1
    release.set()
    loader.join(10)
    assert manager.current.family == "sdxl"


def test_select_default_skips_a_broken_checkpoint(tiny_models_dir, make_manager, tmp_path):
    ckpt_dir = tmp_path / "models" / "Stable-diffusion"
    ckpt_dir.mkdir(parents=True)
    good = tiny_models_dir / "models" / "Stable-diffusion" / "sd1.safetensors"
    (ckpt_dir / "a-broken.safetensors").write_bytes(good.read_bytes()[:4000])   # sorts first
    shutil.copy(good, ckpt_dir / "b-good.safetensors")
    model = make_manager(tmp_path).select_default()
    assert model.sd_checkpoint_info.name == "b-good.safetensors"
