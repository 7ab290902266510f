"""Upscaler models through spandrel: a tiny random ESRGAN (RRDBNet) built here is found in the model folders, loads
from .safetensors and .pth, upscales by its factor, runs the same in tiles; bad files are refused with a message."""
from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from modules import upscalers
from modules.options import Options
from modules.upscalers import UpscalerError, UpscalerRegistry


def tiny_esrgan_state(scale: int, seed: int = 0) -> dict[str, torch.Tensor]:
    upscalers.spandrel_package()
    from spandrel.architectures.ESRGAN.__arch.RRDB import RRDBNet

    torch.manual_seed(seed)
    return {k: v.contiguous() for k, v in RRDBNet(num_filters=8, num_blocks=1, scale=scale).state_dict().items()}


def write_esrgan(folder: Path, name: str, scale: int, fmt: str = "safetensors") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.{fmt}"
    state = tiny_esrgan_state(scale)
    save_file(state, path) if fmt == "safetensors" else torch.save(state, path)
    return path


def picture(w: int = 40, h: int = 24) -> Image.Image:
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_spandrel_loads_without_torchvision():
    upscalers.registry()
    assert "torchvision" not in sys.modules
    assert torch.__version__.startswith("2.13.0")


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_model_file_is_found_loads_and_upscales_by_its_scale(tmp_path, fmt):
    path = write_esrgan(tmp_path / "models" / "ESRGAN", "tiny", 2, fmt)
    registry = UpscalerRegistry(upscalers.default_folders(tmp_path / "models"), Options())
    assert registry.names() == ["None", "Lanczos", "Nearest", "tiny"]
    entry = registry.find("tiny")
    assert entry.data_path == str(path) and entry.model_name == "ESRGAN"
    model = registry.cache.get(path)
    assert model.scale == 2 and model.architecture.name == "ESRGAN"
    out = entry.scaler.upscale(picture(), 2, entry.data_path)
    assert out.size == (80, 48)
    # the model's own output, not a resize: it differs from Lanczos of the same picture
    lanczos = np.asarray(picture().resize((80, 48), Image.Resampling.LANCZOS), dtype=float)
    assert np.abs(np.asarray(out, dtype=float) - lanczos).mean() > 5
    # x4 with a x2 model: two passes of the model
    assert entry.scaler.upscale(picture(), 4, entry.data_path).size == (160, 96)


def test_folder_flags_and_safetensors_preferred(tmp_path):
    custom = tmp_path / "elsewhere"
    write_esrgan(custom, "4x_model", 4, "pth")
    write_esrgan(custom, "4x_model", 4, "safetensors")
    args = argparse.Namespace(esrgan_models_path=None, realesrgan_models_path=str(custom), swinir_models_path=None,
                              dat_models_path=None)
    registry = UpscalerRegistry(upscalers.default_folders(tmp_path / "models", args))
    entry = registry.find("4x_model")
    assert entry.data_path.endswith(".safetensors") and entry.scale == 4 and entry.model_name == "RealESRGAN"


def test_tiled_run_equals_untiled_away_from_seams():
    upscalers.spandrel_package()
    registry = upscalers.registry()
    model = registry.load(tiny_esrgan_state(2, seed=3)).eval()
    image = upscalers.pil_to_tensor(picture(96, 80))
    whole = upscalers.run_tiled(model, image, 0, 0)
    tiled = upscalers.run_tiled(model, image, 48, 8)
    assert tiled.shape == whole.shape == (1, 3, 160, 192)
    diff = (tiled - whole).abs()[0].amax(0)
    # tiles start at 0, 40 and 48 on x (0 and 32 on y): compare outside bands around every tile edge
    keep = torch.ones_like(diff, dtype=torch.bool)
    for edge in (40, 48, 88):
        keep[:, max(0, (edge - 12) * 2):(edge + 12) * 2] = False
    for edge in (32, 48):
        keep[max(0, (edge - 12) * 2):(edge + 12) * 2, :] = False
    assert keep.sum() > 2000
    assert diff[keep].max() < 1e-4
    assert diff.max() < 0.05  # seams blend, they do not jump


def test_tile_setting_is_used(tmp_path, monkeypatch):
    path = write_esrgan(tmp_path / "ESRGAN", "m", 2)
    opts = Options()
    opts.set("ESRGAN_tile", 16)
    registry = UpscalerRegistry({"ESRGAN": tmp_path / "ESRGAN"}, opts)
    sizes = []
    real = upscalers.run_tiled

    def spy(model, image, tile, overlap):
        sizes.append((tile, overlap))
        return real(model, image, tile, overlap)

    monkeypatch.setattr(upscalers, "run_tiled", spy)
    registry.upscale(picture(), 2, "m")
    assert sizes == [(16, 8)] and registry.find("m").data_path == str(path)


class _Canary:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_pickle_that_would_run_code_is_refused(tmp_path, protocol):
    canary = tmp_path / "canary"
    folder = tmp_path / "ESRGAN"
    folder.mkdir()
    state = {"evil": _Canary(str(canary)), **tiny_esrgan_state(2)}
    with open(folder / "evil.pth", "wb") as f:
        pickle.dump(state, f, protocol=protocol)
    pickle.loads(pickle.dumps(_Canary(str(tmp_path / "proof"))))  # the payload does run when unpickled for real
    assert (tmp_path / "proof").exists()
    registry = UpscalerRegistry({"ESRGAN": folder})
    with pytest.raises(UpscalerError, match="evil.pth: refused to load") as e:
        registry.upscale(picture(), 2, "evil")
    assert not canary.exists()
    if protocol == 2:
        assert "it calls" in str(e.value)


def test_files_that_are_not_models_get_clear_messages(tmp_path):
    folder = tmp_path / "ESRGAN"
    folder.mkdir()
    (folder / "notes.safetensors").write_bytes(b"this is not a model")
    (folder / "junk.pth").write_bytes(b"\x00" * 64)
    save_file({"weight": torch.zeros(3, 3)}, folder / "other.safetensors")
    registry = UpscalerRegistry({"ESRGAN": folder})
    for name, message in (("notes", "not a readable model file"), ("junk", "refused to load"),
                          ("other", "not an upscaler model of a known architecture")):
        with pytest.raises(UpscalerError, match=message) as e:
            registry.upscale(picture(), 2, name)
        assert name in str(e.value)


def test_lanczos_equals_pillow_and_bad_scales_are_refused():
    registry = UpscalerRegistry({})
    image = picture(40, 24)
    assert np.array_equal(np.asarray(registry.upscale(image, 2, "Lanczos")),
                          np.asarray(image.resize((80, 48), Image.Resampling.LANCZOS)))
    assert np.array_equal(np.asarray(registry.upscale(image, 2, "Nearest")),
                          np.asarray(image.resize((80, 48), Image.Resampling.NEAREST)))
    # "None" has no model: it only brings the picture to size with Lanczos (A1111's SD upscale relies on that)
    assert np.array_equal(np.asarray(registry.upscale(image, 2, "None")),
                          np.asarray(registry.upscale(image, 2, "Lanczos")))
    for scale in (0, 100, -1):
        with pytest.raises(UpscalerError, match="scale"):
            registry.upscale(image, scale, "Lanczos")
    with pytest.raises(UpscalerError, match="could not find upscaler named 'Magic'.*Lanczos"):
        registry.find("Magic")


# ---------------------------------------------------------------------------------------------------------------------
# hires fix with an upscaler model, on the shipped default model
# ---------------------------------------------------------------------------------------------------------------------
def near_identity_esrgan_state(scale: int = 2) -> dict[str, torch.Tensor]:
    """A tiny ESRGAN whose main path carries the RGB channels straight through (so it upscales like nearest
    neighbour) plus its random dense blocks scaled down: a model that upscales a picture recognisably, as a trained one
    would, but not exactly like any resize."""
    state = {k: v * 0.1 for k, v in tiny_esrgan_state(scale, seed=5).items()}
    path = [k for k in state if k.startswith("model.") and "sub" not in k and k.endswith(".weight")]
    for key in path:
        weight = torch.zeros_like(state[key])
        for c in range(3):
            weight[c, c, 1, 1] = 1.0
        state[key] = weight
        state[key.replace(".weight", ".bias")] = torch.zeros_like(state[key.replace(".weight", ".bias")])
    return state


def test_hires_fix_with_an_esrgan_model_keeps_a_red_circle(tmp_path):
    from tests.fixtures_models import SHIPPED, paths_with_shipped_models

    if not SHIPPED:
        pytest.skip("no shipped model")
    from modules import analyser
    from modules.processing import StableDiffusionProcessingTxt2Img, process_images
    from modules.progress import JobState
    from modules.sd_models import ModelManager

    folder = tmp_path / "models" / "ESRGAN"
    folder.mkdir(parents=True)
    save_file(near_identity_esrgan_state(2), folder / "tiny-2x.safetensors")
    opts = Options(samples_save=False, live_previews_enable=False)
    registry = UpscalerRegistry(upscalers.default_folders(tmp_path / "models"), opts)
    model = ModelManager(paths_with_shipped_models(tmp_path / "data"), Options()).select_default()
    loads = []
    real_get = registry.cache.get
    registry.cache.get = lambda path: loads.append(path) or real_get(path)
    for seed in (1, 2):
        p = StableDiffusionProcessingTxt2Img(prompt="a red circle", seed=seed, width=64, height=64, steps=10,
                                             cfg_scale=6, enable_hr=True, hr_upscaler="tiny-2x", hr_scale=2,
                                             denoising_strength=0.5, do_not_save_samples=True, do_not_save_grid=True)
        p.sd_model, p.opts, p.state, p.upscalers = model, opts, JobState(), registry
        processed = process_images(p)
        image = processed.images[0]
        assert image.size == (128, 128)
        assert "Hires upscaler: tiny-2x" in processed.infotexts[0]
        seen = analyser.analyse(image.resize((64, 64), Image.Resampling.LANCZOS))
        assert (seen.color, seen.shape) == ("red", "circle"), (seed, seen)
    assert loads and loads[0].name == "tiny-2x.safetensors"


def test_unknown_hires_upscaler_fails_before_sampling(tiny_sd1_model):
    from modules.processing import GenerationError, StableDiffusionProcessingTxt2Img, process_images
    from modules.progress import JobState

    p = StableDiffusionProcessingTxt2Img(prompt="x", width=64, height=64, steps=2, enable_hr=True,
                                         hr_upscaler="Magic", do_not_save_samples=True)
    p.sd_model, p.opts, p.state, p.upscalers = tiny_sd1_model, Options(), JobState(), UpscalerRegistry({})
    with pytest.raises(GenerationError, match="hr_upscaler: could not find upscaler named 'Magic'.*Latent"):
        process_images(p)
    assert p.state.sampling_step == 0
