"""Fields that must do what they say: every offered sampler x schedule pair generates, tiling tiles, eta_ancestral
and "Don't Interrupt in the middle" have their effect, and an interrupted image is not saved as done."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from modules import infotext, sd_samplers
from modules.options import Options
from modules.processing import GenerationError, StableDiffusionProcessingTxt2Img, process_images
from modules.progress import JobState

SIZE = 64
pytestmark = pytest.mark.filterwarnings("ignore:Should have:UserWarning")
PAIRS = [(name, label) for name in sd_samplers.visible_sampler_names() for label in sd_samplers.schedules_for(name)]


@pytest.fixture
def opts(tmp_path):
    return Options(outdir_samples=str(tmp_path / "out"), outdir_grids=str(tmp_path / "grids"))


def run(model, opts, state=None, **kw):
    kw = {"prompt": "a red circle", "steps": 4, "width": SIZE, "height": SIZE, "seed": 1234,
          "do_not_save_samples": True, "do_not_save_grid": True, **kw}
    p = StableDiffusionProcessingTxt2Img(**kw)
    p.sd_model, p.opts, p.state = model, opts, state or JobState()
    return process_images(p)


def arr(im) -> np.ndarray:
    return np.asarray(im, dtype=np.float64)


@pytest.mark.parametrize("sampler,schedule", PAIRS)
def test_every_offered_pair_generates_an_image(tiny_sd1_model, opts, sampler, schedule):
    out = run(tiny_sd1_model, opts, sampler_name=sampler, scheduler=schedule, steps=3)
    a = arr(out.images[0])
    assert a.shape == (SIZE, SIZE, 3) and np.isfinite(a).all() and a.std() > 0
    assert infotext.parse_generation_parameters(out.infotexts[0])["Sampler"] == sampler


def test_a_pair_that_cannot_run_is_refused_naming_it(tiny_sd1_model, opts):
    with pytest.raises(GenerationError, match="'Karras' is not available for sampler 'DDIM'"):
        run(tiny_sd1_model, opts, sampler_name="DDIM", scheduler="Karras")
    with pytest.raises(GenerationError, match="'Restart' is not available here"):
        run(tiny_sd1_model, opts, sampler_name="Restart")


def _seam_correlation(image) -> tuple[float, float]:
    """Correlation of the first with the last column, and of the first with the last row (over all channels)."""
    a = arr(image)

    def corr(x, y):
        x, y = x.ravel() - x.mean(), y.ravel() - y.mean()
        return float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum()))

    return corr(a[:, 0], a[:, -1]), corr(a[0], a[-1])


def test_tiling_makes_the_edges_continue_each_other(tiny_sd1_model, opts):
    convs = [m for m in tiny_sd1_model.unet.modules() if isinstance(m, torch.nn.Conv2d)]
    plain, tiled = [], []
    for seed in (1, 2, 3):
        plain.append(_seam_correlation(run(tiny_sd1_model, opts, seed=seed, tiling=False).images[0]))
        out = run(tiny_sd1_model, opts, seed=seed, tiling=True)
        tiled.append(_seam_correlation(out.images[0]))
    assert np.mean([c for c, _ in tiled]) > np.mean([c for c, _ in plain]) + 0.2   # left/right seam
    assert np.mean([r for _, r in tiled]) > np.mean([r for _, r in plain]) + 0.2   # top/bottom seam
    assert "Tiling: True" in out.infotexts[0]
    assert all(m.padding_mode == "zeros" for m in convs)           # the model is itself again after the job
    assert run(tiny_sd1_model, Options(tiling=True, samples_save=False)).p.tiling is True  # the setting, as A1111


def test_eta_ancestral_is_read_and_changes_euler_a(tiny_sd1_model, opts):
    euler = run(tiny_sd1_model, opts, sampler_name="Euler").images[0]
    eta0 = run(tiny_sd1_model, Options(eta_ancestral=0.0, samples_save=False), sampler_name="Euler a")
    default = run(tiny_sd1_model, opts, sampler_name="Euler a").images[0]
    assert np.abs(arr(eta0.images[0]) - arr(euler)).max() <= 2      # eta 0: no ancestral noise, Euler's image
    assert np.abs(arr(default) - arr(euler)).mean() > 1             # eta 1 (default): the ancestral noise
    assert "Eta: 0.0" in eta0.infotexts[0]
    with pytest.raises(GenerationError, match="eta 0.5 is not available for sampler 'DPM2 a'"):
        run(tiny_sd1_model, Options(eta_ancestral=0.5), sampler_name="DPM2 a")


class PressAt(JobState):
    """Presses Interrupt (the UI button, with or without "Don't Interrupt in the middle") at step 2 of the first
    image, and again at step 3 when ``twice``."""

    def __init__(self, after_current: bool, twice: bool = False):
        object.__setattr__(self, "_after_current", after_current)
        object.__setattr__(self, "_twice", twice)
        super().__init__()

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if name == "sampling_step" and self.job_no == 0 and (value == 2 or (self._twice and value == 3)):
            self.interrupt_button(self._after_current)


def test_dont_interrupt_in_the_middle_finishes_the_current_image(tiny_sd1_model, opts):
    out = run(tiny_sd1_model, opts, state=PressAt(after_current=True), steps=6, n_iter=3, do_not_save_samples=False)
    assert out.interrupted
    assert len(out.images) == 1 and len(out.files) == 1          # the image being made was finished and saved
    whole = run(tiny_sd1_model, opts, steps=6).images[0]
    assert np.array_equal(arr(out.images[0]), arr(whole))          # ... all its steps, not a half-denoised one


def test_interrupt_in_the_middle_saves_nothing_half_finished(tiny_sd1_model, opts):
    for state in (PressAt(after_current=False), PressAt(after_current=True, twice=True)):
        out = run(tiny_sd1_model, opts, state=state, steps=6, n_iter=3, do_not_save_samples=False)
        assert out.interrupted and out.images == [] and out.files == []
    single = PressAt(after_current=True)   # one image: the button interrupts at once, as A1111's
    out = run(tiny_sd1_model, opts, state=single, steps=6, do_not_save_samples=False)
    assert out.interrupted and out.files == []


def test_the_ui_schedule_list_follows_the_sampler():
    from modules import ui

    ddim = ui.schedule_choices("DDIM", "Karras")
    assert ddim["choices"] == sd_samplers.schedules_for("DDIM") and "Karras" not in ddim["choices"]
    assert ddim["value"] == "Automatic"                       # Karras is not offered with DDIM any more
    euler_a = ui.schedule_choices("Euler a", "Karras")
    assert "Karras" in euler_a["choices"] and "value" not in euler_a      # Karras stays: the value is left as it is
