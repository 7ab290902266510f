import datetime
import os
import threading
from pathlib import Path

import pytest
from PIL import Image

from modules import images
from modules.options import Options

INFO = ('a cat, "quoted": ünïcödé 🐱 日本\nline two\nNegative prompt: blurry\n'
        'Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 5, Size: 64x48, Version: v0.1.0')
FLAT = Options(save_to_dirs=False)


def picture(color="red", size=(64, 48), mode="RGB") -> Image.Image:
    return Image.new(mode, size, color)


@pytest.mark.parametrize("extension", ["png", "jpg", "jpeg", "webp"])
def test_infotext_round_trip_through_the_file(tmp_path, extension):
    fullfn, txt = images.save_image(picture(), tmp_path, "", 5, "a cat", extension, info=INFO, save_to_dirs=False)
    assert txt is None
    assert Path(fullfn).name == f"00000-5-a cat.{extension}"
    with Image.open(fullfn) as im:
        geninfo, items = images.read_info_from_image(im)
        assert im.size == (64, 48)
    assert geninfo == INFO
    assert items == {}


def test_png_keeps_other_text_chunks(tmp_path):
    fullfn, _ = images.save_image(picture(), tmp_path, "", 5, extension="png", info=INFO,
                                  existing_info={"extras": "upscaled", "Software": "ours"}, opts=FLAT)
    with Image.open(fullfn) as im:
        assert im.text == {"extras": "upscaled", "Software": "ours", "parameters": INFO}
        assert images.read_info_from_image(im) == (INFO, {"extras": "upscaled", "Software": "ours"})


def test_custom_section_name_and_pnginfo_disabled(tmp_path):
    fullfn, _ = images.save_image(picture(), tmp_path, "", 5, info="up", pnginfo_section_name="extras", opts=FLAT)
    with Image.open(fullfn) as im:
        assert im.text == {"extras": "up"}
    fullfn, _ = images.save_image(picture(), tmp_path, "", 5, info=INFO, opts=Options(save_to_dirs=False,
                                                                                      enable_pnginfo=False))
    with Image.open(fullfn) as im:
        assert images.read_info_from_image(im) == (None, {})


def test_jpeg_from_rgba_and_quality(tmp_path):
    rgba, _ = images.save_image(picture(mode="RGBA", color=(255, 0, 0, 128)), tmp_path, "", 1, extension="jpg",
                                info=INFO, opts=FLAT)
    with Image.open(rgba) as im:
        assert im.mode == "RGB" and images.read_info_from_image(im)[0] == INFO
    noise = Image.effect_noise((64, 64), 50).convert("RGB")
    low, _ = images.save_image(noise, tmp_path, "", 2, extension="jpg", opts=Options(save_to_dirs=False,
                                                                                      jpeg_quality=10))
    high, _ = images.save_image(noise, tmp_path, "", 2, extension="jpg", opts=Options(save_to_dirs=False,
                                                                                       jpeg_quality=95))
    assert os.path.getsize(low) < os.path.getsize(high)


def test_counter_increments_from_the_highest_number(tmp_path):
    names = [Path(images.save_image(picture(), tmp_path, "", seed, opts=Options())[0]) for seed in (5, 5, 6)]
    date = datetime.date.today().strftime("%Y-%m-%d")
    assert [n.relative_to(tmp_path).as_posix() for n in names] == [
        f"{date}/00000-5.png", f"{date}/00001-5.png", f"{date}/00002-6.png"]
    (tmp_path / date / "00041-123.png").write_bytes(b"")
    (tmp_path / date / "notes-99999.txt").write_bytes(b"")
    assert Path(images.save_image(picture(), tmp_path, "", 7)[0]).name == "00042-7.png"


def test_grids_have_their_own_counter_and_no_seed(tmp_path):
    images.save_image(picture(), tmp_path, "", 5, opts=FLAT)
    grids = [Path(images.save_image(picture(), tmp_path, "grid", 5, "a cat", info=INFO, grid=True, opts=FLAT)[0]).name
             for _ in range(2)]
    assert grids == ["grid-0000.png", "grid-0001.png"]
    assert Path(images.save_image(picture(), tmp_path, "", 5, opts=FLAT)[0]).name == "00001-5.png"


def test_prompt_in_the_name_is_sanitised(tmp_path):
    fullfn, _ = images.save_image(picture(), tmp_path, "", 3, ' a/b\\c: "d"?\n' + "x" * 200, opts=FLAT)
    name = Path(fullfn).name
    assert Path(fullfn).parent == tmp_path
    assert name.startswith('00000-3-a_b_c_ _d___') and len(name) <= 5 + 1 + 1 + 1 + 128 + 4


def test_directory_pattern_and_suffix(tmp_path):
    class Job:
        sd_model_name = "my model"
        steps = 20

    opts = Options(directories_filename_pattern="[model_name]/../[steps]")
    fullfn, _ = images.save_image(picture(), tmp_path, "", 9, p=Job(), suffix="-mask", opts=opts)
    assert Path(fullfn).relative_to(tmp_path).as_posix() == "my model/20/00000-9-mask.png"


def test_forced_filename_overwrites(tmp_path):
    first, _ = images.save_image(picture("red"), tmp_path, "", 1, forced_filename="fixed", opts=FLAT)
    second, _ = images.save_image(picture("blue"), tmp_path, "", 1, forced_filename="fixed", opts=FLAT)
    assert first == second == str(tmp_path / "fixed.png")
    with Image.open(second) as im:
        assert im.getpixel((0, 0)) == (0, 0, 255)
    assert os.listdir(tmp_path) == ["fixed.png"]


def test_txt_file_with_save_txt(tmp_path):
    fullfn, txt = images.save_image(picture(), tmp_path, "", 4, info=INFO, opts=Options(save_to_dirs=False,
                                                                                        save_txt=True))
    assert txt == fullfn[:-4] + ".txt"
    assert Path(txt).read_text(encoding="utf-8") == INFO


def test_crash_while_writing_leaves_no_file(tmp_path, monkeypatch):
    def broken_save(self, fp, format=None, **params):
        fp.write(b"\x89PNG\r\n\x1a\n partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        images.save_image(picture(), tmp_path, "", 5, info=INFO, opts=FLAT)
    assert os.listdir(tmp_path) == []


def test_final_name_only_appears_complete(tmp_path, monkeypatch):
    seen = []
    real_save = Image.Image.save

    def watching_save(self, fp, format=None, **params):
        seen.append(sorted(os.listdir(tmp_path)))
        real_save(self, fp, format=format, **params)
        seen.append(sorted(os.listdir(tmp_path)))

    monkeypatch.setattr(Image.Image, "save", watching_save)
    images.save_image(picture(), tmp_path, "", 5, info=INFO, opts=FLAT)
    assert all(name.startswith(".") for listing in seen for name in listing)
    assert os.listdir(tmp_path) == ["00000-5.png"]


@pytest.mark.parametrize("hard_links", [True, False])
def test_concurrent_saves_never_overwrite(tmp_path, monkeypatch, hard_links):
    if not hard_links:
        def no_link(src, dst):
            raise PermissionError("no hard links on this file system")

        monkeypatch.setattr(os, "link", no_link)
    results: list[str] = []
    errors: list[BaseException] = []

    def work(color: int) -> None:
        try:
            for _ in range(4):
                results.append(images.save_image(picture((color, 0, 0)), tmp_path, "", 5, info=INFO, opts=FLAT)[0])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(c,)) for c in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(Path(r).name for r in results) == [f"{i:05}-5.png" for i in range(24)]
    assert sorted(os.listdir(tmp_path)) == [f"{i:05}-5.png" for i in range(24)]


def test_unsupported_format(tmp_path):
    with pytest.raises(ValueError, match="unsupported image format 'bmp'; valid: png, jpg, jpeg, webp"):
        images.save_image(picture(), tmp_path, "", 1, extension="bmp")


def test_read_info_without_infotext():
    im = picture()
    im.info.update({"dpi": (72, 72), "Software": "paint"})
    assert images.read_info_from_image(im) == (None, {"Software": "paint"})


@pytest.mark.parametrize("count,size", [(1, (1, 1)), (2, (2, 1)), (3, (2, 2)), (4, (2, 2)), (5, (3, 2)),
                                        (6, (3, 2)), (7, (3, 3)), (9, (3, 3)), (10, (4, 3)), (16, (4, 4))])
def test_grid_default_rows(count, size):
    cols, rows = size
    grid = images.image_grid([picture() for _ in range(count)])
    assert grid.size == (64 * cols, 48 * rows) and grid.mode == "RGB"


def test_grid_rows_and_placement():
    imgs = [picture(c) for c in ("red", "green", "blue", "white", "yellow", "cyan")]
    assert images.image_grid(imgs, rows=1).size == (64 * 6, 48)
    assert images.image_grid(imgs, batch_size=3, rows=0).size == (64 * 2, 48 * 3)
    grid = images.image_grid(imgs[:3], rows=2)
    assert grid.getpixel((70, 10)) == (0, 128, 0)   # second image, first row
    assert grid.getpixel((10, 50)) == (0, 0, 255)   # third image, second row
    assert grid.getpixel((70, 50)) == (0, 0, 0)     # the empty cell is black


def striped(size=(100, 50), band=4) -> Image.Image:
    """Green picture with red top, blue bottom, white left and black right bands and a yellow centre."""
    w, h = size
    im = picture("green", size)
    im.paste((255, 0, 0), (0, 0, w, band))
    im.paste((0, 0, 255), (0, h - band, w, h))
    im.paste((255, 255, 255), (0, band, band, h - band))
    im.paste((0, 0, 0), (w - band, band, w, h - band))
    im.paste((255, 255, 0), (w // 2 - 5, h // 2 - 5, w // 2 + 5, h // 2 + 5))
    return im


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
@pytest.mark.parametrize("size", [(64, 64), (128, 32), (40, 96)])
def test_resize_modes_give_the_requested_size(mode, size):
    assert images.resize_image(mode, striped(), *size).size == size
    assert images.resize_image(mode, picture("white", (30, 70), "L"), *size).mode == "L"


def test_crop_and_resize_keeps_the_centre():
    out = images.resize_image(1, striped((100, 50)), 64, 64)
    assert out.getpixel((32, 32)) == (255, 255, 0)
    # The left and right ends were cropped away; top and bottom rows remain.
    assert out.getpixel((0, 32)) == (0, 128, 0) and out.getpixel((32, 0))[0] > 200


def test_resize_and_fill_stretches_the_edges():
    out = images.resize_image(2, striped((100, 50)), 64, 64)
    assert out.getpixel((32, 32)) == (255, 255, 0)
    # 100x50 fits as 64x32 at rows 16..47; the borders repeat the red top and blue bottom rows.
    assert all(out.getpixel((32, y))[0] > 200 and out.getpixel((32, y))[2] < 60 for y in range(0, 15))
    assert all(out.getpixel((32, y))[2] > 200 and out.getpixel((32, y))[0] < 60 for y in range(49, 64))
    tall = images.resize_image(2, striped((50, 100)), 64, 64)
    assert min(tall.getpixel((2, 32))) > 200 and max(tall.getpixel((61, 32))) < 20  # white left, black right


def test_just_resize_stretches():
    out = images.resize_image(0, striped((100, 50)), 64, 64)
    assert out.getpixel((32, 32)) == (255, 255, 0) and out.getpixel((32, 0))[0] > 200


def test_unknown_resize_mode():
    with pytest.raises(ValueError, match="unknown resize mode 4"):
        images.resize_image(4, striped(), 64, 64)


def test_filename_parts_fit_the_file_system_in_bytes():
    from modules.images import sanitize_filename_part
    part = sanitize_filename_part("🐱" * 200)
    assert part == "🐱" * 32 and len(part.encode()) <= 128   # 128 characters of emoji would be 512 bytes
    assert sanitize_filename_part("é" * 200) == "é" * 64
