"""Live previews: the cheap map is close to the real decode and nearly free; each `show_progress_type` does what it says;
TAESD and Full decode off the sampling thread."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from modules import analyser, live_previews, processing
from modules.options import Options
from modules.paths import Paths
from modules.processing import StableDiffusionProcessingTxt2Img, process_images
from modules.progress import JobState
from modules.sd_models import ModelManager
from tests.fixtures_models import SHIPPED, paths_with_shipped_models

SIZE = 64


def run(model, opts, state=None, data_dir=None, **kw):
    kw = {"prompt": "a red circle", "steps": 6, "width": model.native_size, "height": model.native_size, "seed": 3,
          "do_not_save_samples": True, "do_not_save_grid": True, **kw}
    p = StableDiffusionProcessingTxt2Img(**kw)
    p.sd_model, p.opts, p.state = model, opts, state or JobState()
    p.data_dir = str(data_dir) if data_dir else None
    return process_images(p)


@pytest.fixture
def captured(monkeypatch):
    """Latents each preview was asked for, by step."""
    seen: dict[int, torch.Tensor] = {}
    original = live_previews.Previewer.step

    def step(self, i, total, latents):
        if self.wants(i, total):
            seen[i + 1] = latents[:1].clone()
        return original(self, i, total, latents)

    monkeypatch.setattr(live_previews.Previewer, "step", step)
    return seen


class Recording(JobState):
    def __init__(self):
        super().__init__()
        self.previews: list[tuple[int, object, str]] = []

    def set_current_image(self, image, step=None):
        super().set_current_image(image, step=step)
        self.previews.append((self.current_image_sampling_step, image, threading.current_thread().name))


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def arr(im) -> np.ndarray:
    return np.asarray(im, dtype=np.float64)


@pytest.fixture(scope="module")
def default_model(tmp_path_factory):
    if not SHIPPED:
        pytest.skip("no shipped model")
    return ModelManager(paths_with_shipped_models(tmp_path_factory.mktemp("pv")), Options()).select_default()


def test_cheap_preview_of_the_default_model_matches_the_decode_and_costs_far_less(default_model, monkeypatch):
    """The default model's VAE is not a known one: its map is fitted at load; its preview shows the decode's colours."""
    finals = []
    decode, to_tensor = processing.decode_latents, processing.decode_to_tensor
    monkeypatch.setattr(processing, "decode_to_tensor",
                        lambda m, lat, state=None: finals.append(lat.clone()) or to_tensor(m, lat, state))
    assert live_previews.linear_map(default_model).source == "fitted"
    for prompt, colour in (("a red circle", "red"), ("a blue square", "blue"), ("a green triangle", "green")):
        run(default_model, Options(samples_save=False, live_previews_enable=False), prompt=prompt, steps=15)
        lat = finals[-1]
        with torch.inference_mode():
            t = time.perf_counter()
            for _ in range(5):
                full = decode(default_model, lat)[0]
            t_full = (time.perf_counter() - t) / 5
            t = time.perf_counter()
            for _ in range(5):
                cheap = live_previews.to_image(live_previews.linear_map(default_model)(lat), full.size)
            t_cheap = (time.perf_counter() - t) / 5
        assert cheap.size == full.size
        error = np.abs(arr(cheap) - arr(full)).mean(axis=(0, 1))
        assert error.max() < 25, (prompt, error)                      # per-channel mean error, of 255
        assert np.abs(arr(cheap).mean((0, 1)) - arr(full).mean((0, 1))).max() < 12, prompt
        assert analyser.analyse(full).color == colour, prompt         # the model drew it ...
        assert analyser.analyse(cheap).color == colour, prompt        # ... and the preview shows it in its colour
        assert t_cheap < t_full / 5, (t_cheap, t_full)


def test_default_previews_cost_under_two_percent_of_a_job(default_model, monkeypatch):
    spent = []
    original = live_previews.Previewer.step

    def timed(self, *a):
        t = time.perf_counter()
        original(self, *a)
        spent.append(time.perf_counter() - t)

    monkeypatch.setattr(live_previews.Previewer, "step", timed)
    state = Recording()
    t = time.perf_counter()
    run(default_model, Options(samples_save=False), state=state, steps=20)
    total = time.perf_counter() - t
    assert Options().show_progress_type == "Approx cheap" and Options().live_previews_enable
    assert len(state.previews) == 3        # steps 5, 10, 15 (none on the last step: the image itself follows)
    assert sum(spent) < 0.02 * total, (sum(spent), total)


def test_cheap_preview_reaches_the_state_at_image_size(tiny_sd1_model, captured):
    state = Recording()
    run(tiny_sd1_model, Options(samples_save=False, show_progress_every_n_steps=2), state=state)
    assert [s for s, _, _ in state.previews] == [2, 4]
    for step, image, thread in state.previews:
        expected = live_previews.to_image(live_previews.linear_map(tiny_sd1_model)(captured[step]), (SIZE, SIZE))
        assert image.size == (SIZE, SIZE) and np.array_equal(arr(image), arr(expected))
        assert thread == threading.main_thread().name


def test_previews_off_and_every_n_steps_are_honoured(tiny_sd1_model):
    state = Recording()
    run(tiny_sd1_model, Options(samples_save=False, live_previews_enable=False), state=state)
    assert state.previews == []
    state = Recording()
    run(tiny_sd1_model, Options(samples_save=False, show_progress_every_n_steps=1), state=state)
    assert [s for s, _, _ in state.previews] == [1, 2, 3, 4, 5]


@pytest.fixture
def keep_last_frame(monkeypatch):
    """The job's end normally drops a frame not yet decoded; on a loaded machine that can be every frame."""
    monkeypatch.setattr(live_previews._decoder, "discard", lambda state: None)


def test_full_previews_are_real_decodes_made_off_the_sampling_thread(tiny_sd1_model, captured, keep_last_frame):
    decoding_threads = []
    handle = tiny_sd1_model.vae.decoder.register_forward_hook(
        lambda *a: decoding_threads.append(threading.current_thread().name))
    try:
        state = Recording()
        run(tiny_sd1_model, Options(samples_save=False, show_progress_every_n_steps=1, show_progress_type="Full"),
            state=state, steps=8)
        wait_for(lambda: len(state.previews) >= 1)
        time.sleep(0.2)
    finally:
        handle.remove()
    assert state.previews, "no Full preview arrived"
    assert all(thread == "live-preview" for _, _, thread in state.previews)
    # the sampling thread decoded only the final image; every preview decode ran on the preview thread
    assert decoding_threads.count(threading.main_thread().name) == 1
    for step, image, _ in state.previews:
        with torch.inference_mode():
            expected = processing.decode_latents(tiny_sd1_model, captured[step])[0]
        assert np.abs(arr(image) - arr(expected)).max() <= 1, step


def _write_tiny_taesd(folder):
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    # three decoder blocks: two 2x upsamplings, the f=4 of the tiny test model
    AutoencoderTiny(encoder_block_out_channels=(8, 8, 8), decoder_block_out_channels=(8, 8, 8),
                    num_encoder_blocks=(1, 1, 1), num_decoder_blocks=(1, 1, 1)).save_pretrained(folder)


def test_taesd_previews_use_the_tiny_autoencoder_from_vae_approx(tiny_sd1_model, captured, tmp_path, keep_last_frame):
    _write_tiny_taesd(Paths.from_args(data_dir=tmp_path).vae_approx_dir / "taesd")
    state = Recording()
    run(tiny_sd1_model, Options(samples_save=False, show_progress_every_n_steps=2, show_progress_type="TAESD"),
        state=state, data_dir=tmp_path)
    wait_for(lambda: len(state.previews) >= 1)
    time.sleep(0.2)
    from diffusers import AutoencoderTiny

    tiny = AutoencoderTiny.from_pretrained(Paths.from_args(data_dir=tmp_path).vae_approx_dir / "taesd")
    for step, image, thread in state.previews:
        assert thread == "live-preview"
        with torch.inference_mode():
            expected = live_previews.to_image(tiny.decode(captured[step]).sample, (SIZE, SIZE))
            cheap = live_previews.to_image(live_previews.linear_map(tiny_sd1_model)(captured[step]), (SIZE, SIZE))
        assert np.abs(arr(image) - arr(expected)).max() <= 1
        assert np.abs(arr(image) - arr(cheap)).mean() > 5  # not the cheap map


def test_taesd_without_weights_says_so_and_shows_the_cheap_preview(tiny_sd1_model, tmp_path):
    state = Recording()
    run(tiny_sd1_model, Options(samples_save=False, show_progress_every_n_steps=2, show_progress_type="TAESD"),
        state=state, data_dir=tmp_path)
    assert "no TAESD weights" in (state.textinfo or "")
    assert [thread for _, _, thread in state.previews] == [threading.main_thread().name] * 2


def test_known_vaes_use_the_published_factors_and_others_are_fitted(tiny_sd1_model):
    assert tiny_sd1_model.vae_scale_factor == 4          # a random f=4 VAE is no SD VAE, though the family is sd1
    fitted = live_previews.linear_map(tiny_sd1_model)
    assert fitted.source == "fitted" and fitted is live_previews.linear_map(tiny_sd1_model)  # kept with the VAE
