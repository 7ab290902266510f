"""Zero terminal SNR (modules.noise_schedule): detection from a checkpoint's ``ztsnr`` / ``v_pred`` keys and a
diffusers folder's scheduler config, the ``sd_noise_schedule`` setting, the rescaled schedule every sampler samples
with (or the reason it refuses), the last step from SNR 0 with v-prediction, the infotext, CFG rescale."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from modules import infotext, noise_schedule, sd_samplers
from modules.options import Options
from modules.paths import Paths
from modules.processing import GenerationError, StableDiffusionProcessingTxt2Img, _step_sigma, process_images
from modules.progress import JobState
from tests.fixtures_models import SCHEDULER, build_tiny, ldm_state_dict, write_checkpoint, write_diffusers_folder

ZTSNR = noise_schedule.ZERO_TERMINAL_SNR
pytestmark = pytest.mark.usefixtures("single_torch_thread")  # tiny models: a second thread only waits on busy cores


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """sd1-ztsnr.safetensors (ztsnr + v_pred keys), sd1-plain.safetensors, and a diffusers folder whose scheduler
    config says rescale_betas_zero_snr / v_prediction."""
    data_dir = tmp_path_factory.mktemp("ztsnr-data")
    ckpt_dir = Paths.from_args(data_dir=data_dir).ckpt_dir
    ckpt_dir.mkdir(parents=True)
    tiny = build_tiny("sd1", prediction_type="v_prediction", seed=3)
    state = ldm_state_dict(tiny)
    state.update({noise_schedule.ZTSNR_KEY: torch.tensor([]), noise_schedule.V_PRED_KEY: torch.tensor([])})
    save_file(state, str(ckpt_dir / "sd1-ztsnr.safetensors"))
    write_checkpoint(build_tiny("sd1", seed=3), ckpt_dir / "sd1-plain.safetensors")
    folder = write_diffusers_folder(tiny, ckpt_dir / "sd1-ztsnr-diffusers")
    config_path = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    config.update(_class_name="DDIMScheduler", rescale_betas_zero_snr=True, timestep_spacing="trailing")
    config_path.write_text(json.dumps(config))
    return data_dir


@pytest.fixture(scope="module")
def manager(data_dir, make_manager):
    return make_manager(data_dir)


def _run(model, opts: Options | None = None, **fields):
    p = StableDiffusionProcessingTxt2Img(**{"prompt": "a shape", "steps": 3, "width": 64, "height": 64, "seed": 5,
                                            "do_not_save_samples": True, "do_not_save_grid": True, **fields})
    p.sd_model, p.opts, p.state = model, opts or Options(samples_save=False), JobState()
    return p, process_images(p)


def test_marker_keys_are_detected_and_sampled_with_the_rescaled_schedule(manager):
    model = manager.load("sd1-ztsnr.safetensors")
    assert model.zero_terminal_snr and model.prediction_type == "v_prediction"
    assert model.scheduler_config["rescale_betas_zero_snr"] is True
    p, processed = _run(model)
    scheduler = p.sampler
    assert float(scheduler.alphas_cumprod[-1]) == pytest.approx(0.0, abs=1e-7)    # SNR 0 within float tolerance
    assert float(scheduler.alphas_cumprod[0]) == pytest.approx(1 - 0.00085, rel=1e-4)  # the first step unchanged
    assert int(scheduler.timesteps[0]) == 999                                      # sampling starts at the last step
    params = infotext.parse_generation_parameters(processed.infotexts[0])
    assert params["Noise Schedule"] == ZTSNR
    assert np.asarray(processed.images[0]).std() > 0


def test_plain_checkpoint_is_not_rescaled_unless_the_setting_forces_it(manager):
    model = manager.load("sd1-plain.safetensors")
    assert not model.zero_terminal_snr and model.prediction_type == "epsilon"
    p, processed = _run(model)
    assert float(p.sampler.alphas_cumprod[-1]) == pytest.approx(0.0047, rel=0.01)   # SD's √ᾱ_T ≈ 0.068
    assert "Noise Schedule" not in processed.infotexts[0]
    forced, forced_processed = _run(model, Options(samples_save=False, sd_noise_schedule=ZTSNR))
    assert float(forced.sampler.alphas_cumprod[-1]) < 1e-7
    assert "Noise Schedule: Zero Terminal SNR" in forced_processed.infotexts[0]
    assert not np.array_equal(np.asarray(processed.images[0]), np.asarray(forced_processed.images[0]))


def test_diffusers_folder_scheduler_config_is_detected(manager):
    model = manager.load("sd1-ztsnr-diffusers")
    assert model.zero_terminal_snr and model.prediction_type == "v_prediction"
    p, processed = _run(model, sampler_name="DDIM")
    assert float(p.sampler.alphas_cumprod[-1]) < 1e-7 and int(p.sampler.timesteps[0]) == 999
    assert "Noise Schedule: Zero Terminal SNR" in processed.infotexts[0]


def test_every_sampler_runs_or_is_refused_clearly(manager):
    model = manager.load("sd1-ztsnr.safetensors")
    ran, refused = [], []
    for sampler in sd_samplers.visible_sampler_names():
        p, processed = _run(model, sampler_name=sampler, steps=4)
        image = np.asarray(processed.images[0])
        assert image.std() > 0, sampler
        assert float(p.sampler.alphas_cumprod[-1]) < 1e-7, sampler
        ran.append(sampler)
        for schedule in ("DDIM", "Align Your Steps", "Beta"):
            if schedule not in sd_samplers.schedules_for(sampler):
                continue
            with pytest.raises(GenerationError, match=f"schedule type '{schedule}' cannot be used with the Zero "
                                                      "Terminal SNR noise schedule"):
                _run(model, sampler_name=sampler, scheduler=schedule)
            refused.append((sampler, schedule))
    assert len(ran) == len(sd_samplers.visible_sampler_names()) and len(refused) > 20


def _oracle_sample(sampler: str, schedule: str, x0: torch.Tensor, zero_terminal_snr: bool, steps: int = 8):
    """Sample with a v-prediction model that knows the one picture ``x0`` of its data (its v is exact at every
    step); returns the result and (ᾱ, v) of the first step."""
    import inspect

    scheduler = sd_samplers.create_scheduler(sampler, schedule, dict(SCHEDULER, prediction_type="v_prediction"),
                                             zero_terminal_snr=zero_terminal_snr)
    scheduler.set_timesteps(steps)
    x = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)) * scheduler.init_noise_sigma
    kwargs = ({"generator": torch.Generator().manual_seed(1)}
              if "generator" in inspect.signature(scheduler.step).parameters else {})
    first = None
    for t in scheduler.timesteps:
        x_in = scheduler.scale_model_input(x, t).double()
        alpha = 1 / (1 + _step_sigma(scheduler, t).double() ** 2)
        eps = (x_in - alpha.sqrt() * x0) / (1 - alpha).sqrt()
        v = alpha.sqrt() * eps - (1 - alpha).sqrt() * x0
        first = first or (float(alpha), v.float())
        x = scheduler.step(v.float(), t, x, **kwargs).prev_sample
    return x.double(), first


@pytest.mark.parametrize("sampler", sd_samplers.visible_sampler_names())
def test_sampling_from_zero_snr_with_v_prediction_reaches_the_data(sampler):
    """The paper's last step: at SNR ≈ 0 the input is pure noise and x₀ = −v. With exact predictions every sampler
    and schedule lands on the data as closely as it does on SD's schedule (samplers that stop at sigma_min, or DDIM
    on linspace steps, are off by as much there)."""
    x0 = torch.full((1, 4, 8, 8), 0.5, dtype=torch.float64)
    x0[..., :4] = -0.8
    for schedule in sd_samplers.schedules_for(sampler):
        if schedule in ("DDIM", "Align Your Steps", "Beta"):
            continue
        x, (alpha_first, v_first) = _oracle_sample(sampler, schedule, x0, zero_terminal_snr=True)
        assert alpha_first < 1e-5, (sampler, schedule)                                    # starts at SNR ≈ 0 ...
        assert torch.allclose(-v_first.double(), x0, atol=0.02), (sampler, schedule)     # ... where x₀ = −v
        baseline, _ = _oracle_sample(sampler, schedule, x0, zero_terminal_snr=False)
        error, baseline_error = float((x - x0).abs().max()), float((baseline - x0).abs().max())
        assert error <= baseline_error + 0.02, (sampler, schedule, error, baseline_error)


def test_refused_schedules_name_the_reason():
    with pytest.raises(ValueError, match="leading spacing starts below the last timestep"):
        sd_samplers.check("Euler", "DDIM", zero_terminal_snr=True)
    with pytest.raises(ValueError, match="sigma 14.6"):
        sd_samplers.create_scheduler("DPM++ 2M", "Align Your Steps", SCHEDULER, zero_terminal_snr=True)
    sd_samplers.check("Euler", "DDIM")   # without zero terminal SNR the pair runs as before


def test_dpm2_a_is_refused_at_the_step_counts_where_it_gives_nan():
    for schedule, steps in (("Automatic", 2), ("Karras", 3)):
        with pytest.raises(ValueError, match="needs at least .* sampling steps .* NaN"):
            sd_samplers.check("DPM2 a", schedule, zero_terminal_snr=True, steps=steps)
    sd_samplers.check("DPM2 a", "Karras", zero_terminal_snr=True, steps=4)
    sd_samplers.check("DPM2 a", "Uniform", zero_terminal_snr=True, steps=3)
    sd_samplers.check("DPM2 a", "Karras", steps=2)          # the original schedule runs at any count
    sd_samplers.check("Euler a", "Karras", zero_terminal_snr=True, steps=2)


def test_cfg_rescale_changes_the_picture_and_is_in_the_infotext(manager):
    model = manager.load("sd1-ztsnr.safetensors")
    _, plain = _run(model, cfg_scale=9)
    _, rescaled = _run(model, cfg_scale=9, guidance_rescale=0.7)
    assert not np.array_equal(np.asarray(plain.images[0]), np.asarray(rescaled.images[0]))
    params = infotext.parse_generation_parameters(rescaled.infotexts[0])
    assert params["CFG Rescale φ"] == "0.7" and params["Noise Schedule"] == ZTSNR
    assert "CFG Rescale" not in plain.infotexts[0]
    for older in ("CFG rescale: 0.5", "CFG Rescale phi: 0.5"):  # our earlier key, the extension's ASCII spelling
        assert infotext.parse_generation_parameters(f"a\nSteps: 2, Seed: 1, {older}")["CFG Rescale φ"] == "0.5"


def test_infotext_noise_schedule_becomes_an_override_through_the_api():
    from modules.api import api, models

    text = "a shape\nSteps: 3, Sampler: Euler, Seed: 4, Noise Schedule: Zero Terminal SNR, CFG Rescale φ: 0.7"
    req = api._apply_infotext(models.Txt2ImgRequest(infotext=text))
    assert req.override_settings["sd_noise_schedule"] == ZTSNR and req.guidance_rescale == 0.7
    plain = api._apply_infotext(models.Txt2ImgRequest(infotext="a\nSteps: 3, Seed: 4, Size: 8x8"))
    assert "sd_noise_schedule" not in plain.override_settings
    with pytest.raises(ValueError, match="sd_noise_schedule"):
        Options().set("sd_noise_schedule", "Cosine")


def test_ztsnr_recipe_exports_a_file_the_app_samples_with_zero_terminal_snr(tmp_path, make_manager):
    """The default model's recipe with --noise-schedule ztsnr (smoke size): v-prediction on rescaled betas, and an
    export whose marker keys and config make the app switch zero terminal SNR and v-prediction on by itself."""
    from safetensors import safe_open

    from modules.train_default_model import PRESETS, Settings, SettingsError, run, validate

    with pytest.raises(SettingsError, match="first-step-share"):
        validate(Settings(out=tmp_path / "bad", noise_schedule="ztsnr", first_step_share=0.1))
    with pytest.raises(SettingsError, match="noise-schedule"):
        validate(Settings(out=tmp_path / "bad", noise_schedule="cosine"))
    settings = Settings(out=tmp_path / "run", **{**PRESETS["smoke"], **PRESETS["ztsnr"], "unet_steps": 6,
                                                 "eval_every": 6, "eval_images": 2})
    path = run(settings)
    with safe_open(str(path), "pt") as f:
        assert {"ztsnr", "v_pred"} <= set(f.keys())
    config = json.loads((tmp_path / "run" / "config" / "scheduler" / "scheduler_config.json").read_text())
    assert (config["rescale_betas_zero_snr"], config["prediction_type"], config["timestep_spacing"]) == (
        True, "v_prediction", "trailing")
    data_dir = tmp_path / "data"
    ckpt_dir = Paths.from_args(data_dir=data_dir).ckpt_dir
    ckpt_dir.mkdir(parents=True)
    (ckpt_dir / path.name).write_bytes(path.read_bytes())
    model = make_manager(data_dir).load(path.name)  # its sd_config names the shipped default-tiny folder (epsilon)
    assert model.zero_terminal_snr and model.prediction_type == "v_prediction"
