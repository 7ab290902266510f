"""LoRA through the generation path on the tiny SD1 model: a kohya-format file made with PEFT, applied by diffusers.

The file is built the way trainers build one: PEFT adapters (random, non-zero up weights) on copies of the model's
UNet attention and text-encoder attention, saved with diffusers' kohya converter and kohya's ``lora_te_`` prefix.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from diffusers.utils import convert_state_dict_to_kohya
from peft import LoraConfig, get_peft_model_state_dict
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import CLIPTextModel

from modules import lora
from modules.extra_networks import ExtraNetworkParams, PromptResources
from modules.options import Options
from modules.processing import StableDiffusionProcessingTxt2Img, process_images
from modules.progress import JobState

PROMPT = "a red circle"


def write_tiny_lora(model, path: Path, *, seed: int, metadata: dict[str, str] | None = None) -> None:
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(model.unet.config)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    text_encoder = CLIPTextModel(model.text_encoder.config)
    text_encoder.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                        target_modules=["q_proj", "k_proj", "v_proj", "out_proj"]))
    peft = {f"unet.{key}": value for key, value in get_peft_model_state_dict(unet).items()}
    peft |= {f"text_encoder.text_model.{key}": value for key, value in get_peft_model_state_dict(text_encoder).items()}
    kohya = {key.replace("lora_te1_", "lora_te_", 1): value.contiguous()
             for key, value in convert_state_dict_to_kohya(peft).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(kohya, str(path), metadata=metadata)


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory, tiny_sd1_model) -> Path:
    directory = tmp_path_factory.mktemp("Lora")
    write_tiny_lora(tiny_sd1_model, directory / "tiny.safetensors", seed=0, metadata={"ss_output_name": "tinyalias"})
    write_tiny_lora(tiny_sd1_model, directory / "styles" / "other.safetensors", seed=1)
    (directory / "corrupt.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a safetensors file")
    return directory


@pytest.fixture
def model(tiny_sd1_model):
    """The shared tiny model, with every adapter removed again afterwards."""
    yield tiny_sd1_model
    lora.unload(tiny_sd1_model)
    assert not lora.has_adapter_layers(tiny_sd1_model.pipe)


@pytest.fixture
def library(lora_dir) -> lora.LoraLibrary:
    return lora.LoraLibrary(lora_dir)


def run(model, library, prompt=PROMPT, **kw):
    p = StableDiffusionProcessingTxt2Img(prompt=prompt, steps=3, width=64, height=64, seed=1234,
                                         do_not_save_samples=True, do_not_save_grid=True, **kw)
    p.sd_model, p.opts, p.state = model, Options(), JobState()
    p.prompt_resources = PromptResources(networks={"lora": lora.LoraNetwork(library)})
    return process_images(p)


def pixels(processed) -> np.ndarray:
    image: Image.Image = processed.images[0]
    return np.asarray(image, dtype=np.int16)


def unet_snapshot(model) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in model.unet.state_dict().items()}


def test_the_file_is_kohya_format_that_diffusers_reads(lora_dir, tiny_sd1_model):
    keys = list(load_file(lora_dir / "tiny.safetensors"))
    assert all(key.startswith(("lora_unet_", "lora_te_text_model_encoder_")) for key in keys)
    assert any(key.endswith(".alpha") for key in keys) and any(key.endswith(".lora_up.weight") for key in keys)
    state_dict, alphas = StableDiffusionPipeline.lora_state_dict(str(lora_dir / "tiny.safetensors"))
    modules = dict(tiny_sd1_model.unet.named_modules())
    unet_keys = [key for key in state_dict if key.startswith("unet.")]
    assert unet_keys and any(key.startswith("text_encoder.") for key in state_dict) and alphas
    # diffusers names them after the attention processors: "<attention module>.processor.to_q_lora.down.weight"
    assert all(key.removeprefix("unet.").split(".processor.")[0] in modules for key in unet_keys)


def test_lora_changes_the_image_weight_zero_is_none_and_the_model_is_restored(model, library, lora_dir):
    before = unet_snapshot(model)
    base = run(model, library)
    with_lora = run(model, library, f"{PROMPT} <lora:tiny:1>")
    zero = run(model, library, f"{PROMPT} <lora:tiny:0>")
    assert np.abs(pixels(with_lora) - pixels(base)).mean() > 1.0
    assert np.array_equal(pixels(zero), pixels(base))

    # after the job the adapters are off: the model computes exactly what it did without them
    assert lora.loaded_adapters(model.pipe)
    assert np.array_equal(pixels(run(model, library)), pixels(base))
    assert not lora.has_adapter_layers(model.pipe)  # a job without LoRA removed the adapter layers
    after = unet_snapshot(model)
    assert before.keys() == after.keys() and all(torch.equal(before[key], after[key]) for key in before)

    data = (lora_dir / "tiny.safetensors").read_bytes()
    addnet = hashlib.sha256(data[8 + int.from_bytes(data[:8], "little"):]).hexdigest()[:12]
    info = with_lora.infotexts[0]
    assert info.startswith(f"{PROMPT} <lora:tiny:1>\n")  # the tag stays in the saved prompt
    assert f'Lora hashes: "tiny: {addnet}"' in info
    assert "Lora hashes" not in base.infotexts[0]


def test_text_encoder_and_unet_weights_are_separate(model, library):
    base = pixels(run(model, library))
    te_only = pixels(run(model, library, f"{PROMPT} <lora:tiny:1:0>"))
    unet_only = pixels(run(model, library, f"{PROMPT} <lora:tiny:0:1>"))
    both = pixels(run(model, library, f"{PROMPT} <lora:tiny:1:1>"))
    for a, b in ((te_only, base), (unet_only, base), (te_only, unet_only), (both, unet_only)):
        assert not np.array_equal(a, b)
    named = pixels(run(model, library, f"{PROMPT} <lora:tinyalias:te=0:unet=1>"))
    assert np.array_equal(named, unet_only)  # found by its alias; named weights


def test_adapters_are_kept_between_jobs_and_swapped_for_other_loras(model, library):
    run(model, library, f"{PROMPT} <lora:tiny:0.5>")
    first = lora.loaded_adapters(model.pipe)
    run(model, library, f"{PROMPT} <lora:tiny:1>")
    assert lora.loaded_adapters(model.pipe) == first
    two = run(model, library, f"{PROMPT} <lora:other:0.7> <lora:tiny:0.2>")
    assert len(lora.loaded_adapters(model.pipe)) == 2
    assert 'Lora hashes: "other: ' in two.infotexts[0] and ", tiny: " in two.infotexts[0]
    run(model, library, f"{PROMPT} <lora:other:1>")
    assert len(lora.loaded_adapters(model.pipe)) == 1


def test_missing_corrupt_and_unknown_networks_are_reported_not_fatal(model, library):
    base = run(model, library)
    out = run(model, library, f"{PROMPT} <lora:nope:1> <lora:corrupt:1> <lora:tiny:x> <hypernet:foo:1>")
    assert np.array_equal(pixels(out), pixels(base))
    comments = list(out.p.comments)
    assert "Lora not found: nope" in comments
    assert any(c.startswith("Lora could not be loaded: corrupt (") for c in comments)
    assert "Lora tiny: weight 'x' is not a finite number" in comments
    assert "Skipping unknown extra network: hypernet" in comments
    assert "Lora hashes" not in out.infotexts[0]
    assert not lora.has_adapter_layers(model.pipe)


def test_disable_extra_networks_strips_tags_without_applying_them(model, library):
    base = run(model, library)
    out = run(model, library, f"{PROMPT} <lora:tiny:1>", disable_extra_networks=True)
    assert np.array_equal(pixels(out), pixels(base))


def test_library_lists_files_as_the_api_does(library, lora_dir):
    listing = {item["name"]: item for item in library.api_listing()}
    assert set(listing) == {"tiny", "other", "corrupt"}
    assert listing["tiny"] == {"name": "tiny", "alias": "tinyalias", "path": str(lora_dir / "tiny.safetensors"),
                               "metadata": {"ss_output_name": "tinyalias"}}
    assert listing["corrupt"]["metadata"] == {} and listing["other"]["alias"] == "other"
    assert library.find("tinyalias").name == "tiny" and library.find("missing") is None
    late = lora_dir / "late.safetensors"
    late.write_bytes((lora_dir / "corrupt.safetensors").read_bytes())
    try:
        assert library.find("late") is not None  # an unknown name rescans the folder
    finally:
        late.unlink()


@pytest.mark.parametrize("args,expected", [
    (["x"], (1.0, 1.0)),
    (["x", "0.5"], (0.5, 0.5)),
    (["x", "0.5", "0.25"], (0.5, 0.25)),
    (["x", "0.5", "te=2"], (2.0, 2.0)),
    (["x", "unet=0.3"], (1.0, 0.3)),
    (["x", "-1"], (-1.0, -1.0)),
])
def test_lora_weights_follow_a1111(args, expected):
    assert lora.lora_weights(ExtraNetworkParams(args)) == expected


@pytest.mark.parametrize("bad", ["abc", "nan", "inf"])
def test_lora_weights_must_be_finite(bad):
    with pytest.raises(ValueError, match="finite"):
        lora.lora_weights(ExtraNetworkParams(["x", bad]))
