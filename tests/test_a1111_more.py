"""More of A1111's surface that real extensions touch (found by running them: sd-webui-ar, adetailer, regional
prompter, wildcards, ...), each with its effect; extension code here is synthetic, using the same A1111 calls."""
from __future__ import annotations

import importlib

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
