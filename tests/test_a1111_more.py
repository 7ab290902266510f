"""More of A1111's surface that real extensions touch (found by running them: sd-webui-ar, adetailer, regional
prompter, wildcards, ...), each with its effect; extension code here is synthetic, using the same A1111 calls."""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from modules import a1111, extensions, scripts
from tests.test_extensions import ext_dir, write_extension  # noqa: F401 - ext_dir is a fixture


@pytest.fixture(autouse=True, scope="module")
def surface():
    a1111.install()


def test_create_binary_mask_uses_alpha_when_the_image_has_transparency():
    from modules import processing

    image = Image.new("RGBA", (3, 1), (200, 200, 200, 255))
    image.putpixel((0, 0), (0, 0, 0, 100))
    image.putpixel((1, 0), (0, 0, 0, 200))
    assert list(processing.create_binary_mask(image).getchannel(0).tobytes()) == [0, 255, 255]
    assert list(processing.create_binary_mask(image, round=False).tobytes()) == [100, 200, 255]
    opaque = Image.new("RGBA", (2, 1), (30, 30, 30, 255))            # fully opaque: the grey levels are the mask
    assert processing.create_binary_mask(opaque).mode == "L"
    assert list(processing.create_binary_mask(opaque).tobytes()) == [30, 30]


def test_modules_safe_loads_tensors_and_refuses_arbitrary_objects(tmp_path):
    from modules import safe

    torch.save({"w": torch.ones(2)}, tmp_path / "ok.pt")
    assert torch.equal(safe.unsafe_torch_load(tmp_path / "ok.pt")["w"], torch.ones(2))
    torch.save({"obj": Image.new("L", (1, 1))}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match="weights_only|Unsupported global"):
        safe.load(tmp_path / "evil.pt")


def test_a_package_a1111_ships_and_this_app_lacks_is_named_with_why(ext_dir):
    write_extension(ext_dir, "needs-cv", """
        import cv2
    """)
    scripts.load_scripts(ext_dir)
    failure = next(f for f in extensions.failures if f.extension == "needs-cv")
    assert "No module named 'cv2'" in failure.error and "opencv-python" in failure.error
    assert importlib.util.find_spec("cv2") is None           # availability checks still work as usual
    from modules.a1111 import missing

    try:
        import torchvision  # noqa: F401
    except ModuleNotFoundError as e:
        assert "cannot be installed here" in missing.describe(e)


# ---------------------------------------------------------------------------------------------------------------------
# p.rng
# ---------------------------------------------------------------------------------------------------------------------
def test_image_rng_first_is_the_batch_noise_and_next_continues_each_images_generator():
    from modules import rng

    shape = (4, 8, 8)
    image_rng = rng.ImageRNG(shape, [5, 6], [9, 10], 0.3, vae_scale_factor=8)
    first = image_rng.next()
    assert torch.equal(first, rng.create_noise(shape, [5, 6], [9, 10], 0.3))
    second = image_rng.next()
    assert second.shape == (2, *shape) and not torch.equal(first, second)
    continued = rng.generators([5], shape)[0]                 # image 0's generator after its initial noise
    assert torch.equal(second[0], torch.randn(shape, generator=continued))
    assert torch.equal(rng.ImageRNG(shape, [6]).next()[0], rng.create_noise(shape, [6])[0])   # per image


@pytest.mark.parametrize("tab", ["txt2img", "img2img"])
def test_p_rng_gives_the_noise_the_batch_starts_from(tiny_sd1_model, tab):
    from tests.test_script_hooks import Hook, hooked

    Hook.actions, Hook.calls = {}, []
    seen = {}

    def record(p, *args, **kwargs):
        seen["rng"], seen["noise"] = p.rng, kwargs["noise"].clone()
        seen["more"] = p.rng.next()            # an extension drawing more noise for the batch (as in A1111)

    Hook.actions["process_before_every_sampling"] = record
    runner, p = hooked(tiny_sd1_model, tab, seed=321, batch_size=2)
    processed = runner.run(p)
    assert len(processed.images[processed.index_of_first_image:]) == 2
    from modules import rng

    shape = tuple(seen["noise"].shape[1:])
    assert seen["rng"].seeds == [321, 322]
    assert torch.equal(seen["noise"].cpu(), rng.create_noise(shape, [321, 322]))
    assert torch.equal(seen["more"][1], torch.randn(shape, generator=rng.generators([322], shape)[0]))


def test_the_settings_file_exists_once_the_app_ran(tmp_path):
    """stable-diffusion-webui-state serves ``shared.cmd_opts.ui_settings_file`` to its page code."""
    from modules import cmd_args, shared
    from modules.runtime import Runtime

    runtime = Runtime.create(cmd_args.parse_args(["--data-dir", str(tmp_path)]))
    try:
        settings_file = Path(shared.cmd_opts.ui_settings_file)
        assert settings_file == tmp_path / "config.json" and settings_file.is_file()
        assert json.loads(settings_file.read_text())["samples_format"] == runtime.opts.samples_format
    finally:
        shared.bind(None)


# ---------------------------------------------------------------------------------------------------------------------
# p.overlay_images
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("full_res", [False, True])
def test_overlay_images_are_the_originals_with_the_masked_part_clear(tiny_sd1_model, full_res):
    """A1111's form, which extensions read and replace: RGBA, alpha 0 where the mask regenerates."""
    from tests.test_script_hooks import Hook, hooked

    Hook.actions, Hook.calls = {}, []
    seen = {}

    def mine(p, ppmo, *args):
        seen["overlay"] = ppmo.overlay_image
        custom = Image.new("RGBA", ppmo.overlay_image.size, (0, 0, 255, 0))
        custom.paste((0, 0, 255, 255), (0, 0, 8, 8))      # an extension's own overlay: a blue opaque corner
        ppmo.overlay_image = custom

    Hook.actions["postprocess_maskoverlay"] = mine
    runner, p = hooked(tiny_sd1_model, "img2img", inpaint_full_res=full_res, do_not_save_grid=True)
    result = runner.run(p).images[0]
    overlay = seen["overlay"]
    assert overlay.mode == "RGBA" and p.overlay_images[0].mode == "RGBA"
    alpha = overlay.getchannel("A")
    w, h = overlay.size
    assert alpha.getpixel((1, 1)) == 0 and alpha.getpixel((w - 2, h - 2)) == 255     # left half regenerated
    assert overlay.convert("RGB").getpixel((w - 2, h - 2)) == (200, 30, 30)           # the original's colour
    assert result.mode == "RGB" and result.getpixel((2, 2)) == (0, 0, 255)          # its overlay was laid on top
    assert result.getpixel((w - 2, h - 2)) != (0, 0, 255)


def test_names_the_agent_scheduler_imports_first():
    """``from modules.shared import list_checkpoint_tiles, refresh_checkpoints``, ``from modules.cmd_args import
    parser``, ``from modules.ui import create_refresh_button`` (A1111 re-exports)."""
    from modules import cmd_args, shared, ui
    from modules.a1111 import shared_items, ui_common

    assert shared.list_checkpoint_tiles is shared_items.list_checkpoint_tiles
    assert shared.refresh_checkpoints is shared_items.refresh_checkpoints
    parser = cmd_args.parser
    assert parser.description != "SD.Next" and parser.parse_args(["--api"]).api is True
    assert ui.create_refresh_button is ui_common.create_refresh_button
    with pytest.raises(AttributeError, match="does not provide"):
        ui.no_such_a1111_name  # noqa: B018
