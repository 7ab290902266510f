import inspect
import json
import math

import pytest
import torch
from diffusers import DDIMScheduler, EulerAncestralDiscreteScheduler

from modules import rng, sd_samplers
from modules.options import Options

# Stable Diffusion 1.5's scheduler_config.json (a PNDM config without timestep_spacing: PNDM's default "leading").
SD15 = {"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
        "clip_sample": False, "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True,
        "steps_offset": 1, "trained_betas": None}
SD21_V = {**SD15, "_class_name": "DDIMScheduler", "prediction_type": "v_prediction", "timestep_spacing": "leading"}

# torchsde (DPM++ SDE's Brownian tree) warns about float rounding at the ends of its interval.
pytestmark = pytest.mark.filterwarnings("ignore:Should have:UserWarning")

A1111_ORDER = ["DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE", "Euler a",
               "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DDIM", "PLMS", "UniPC", "LCM"]

PAIRS = [(s.name, label) for s in sd_samplers._SAMPLERS for label in (sd_samplers.AUTOMATIC, *s.schedules)]


def run_steps(scheduler, steps: int = 10, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """Drive a scheduler the way the generation loop does, with random 'model outputs'."""
    torch.manual_seed(seed)
    scheduler.set_timesteps(steps)
    x = torch.randn(batch, 4, 8, 8) * scheduler.init_noise_sigma
    kwargs = {}
    if "generator" in inspect.signature(scheduler.step).parameters:
        kwargs["generator"] = rng.generators(range(batch), (4, 8, 8))
    calls = 0
    for t in scheduler.timesteps:
        model_output = torch.randn_like(x) * 0.5
        x = scheduler.step(model_output, t, scheduler.scale_model_input(x, t), **kwargs).prev_sample
        calls += 1
    assert calls >= steps
    return x


def test_sampler_list_is_a1111_order_with_dpmpp_2m_first():
    assert sd_samplers.visible_sampler_names() == A1111_ORDER
    assert [s.name for s in sd_samplers.samplers] == A1111_ORDER
    first = sd_samplers.samplers[0]
    assert first == sd_samplers.SamplerData("DPM++ 2M", ["k_dpmpp_2m"], {"scheduler": "karras"})
    assert first.name == first[0] and first.aliases == first[1]


def test_schedulers_list():
    labels = [s.label for s in sd_samplers.schedulers]
    assert labels == ["Automatic", "Uniform", "Karras", "Exponential", "Polyexponential", "SGM Uniform", "KL Optimal",
                      "Align Your Steps", "Simple", "Normal", "DDIM", "Beta"]  # A1111 1.10's list and order
    sgm = next(s for s in sd_samplers.schedulers if s.name == "sgm_uniform")
    assert sgm.aliases == ["SGMUniform"]


@pytest.mark.parametrize("sampler,scheduler", PAIRS)
def test_every_sampler_and_schedule_runs(sampler, scheduler):
    x = run_steps(sd_samplers.create_scheduler(sampler, scheduler, SD15, noise_seeds=[0, 1]))
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("sampler", A1111_ORDER)
def test_v_prediction_model(sampler):
    scheduler = sd_samplers.create_scheduler(sampler, "Automatic", SD21_V, noise_seeds=[0, 1])
    assert scheduler.config.prediction_type == "v_prediction"
    assert torch.isfinite(run_steps(scheduler)).all()


@pytest.mark.parametrize("name,expected", [
    ("k_euler_a", "Euler a"), ("k_euler_ancestral", "Euler a"), ("K_LMS", "LMS"), ("euler A", "Euler a"),
    ("ddim", "DDIM"), ("k_dpmpp_2m_sde_heun", "DPM++ 2M SDE Heun"),
])
def test_aliases(name, expected):
    assert sd_samplers.resolve(name) == (expected, "Automatic")


@pytest.mark.parametrize("name,expected", [
    ("DPM++ 2M Karras", ("DPM++ 2M", "Karras")),
    ("DPM++ SDE Karras", ("DPM++ SDE", "Karras")),
    ("DPM++ 2M SDE Exponential", ("DPM++ 2M SDE", "Exponential")),
    ("DPM++ 2M SDE Karras", ("DPM++ 2M SDE", "Karras")),
    ("DPM++ 2M SDE Heun Exponential", ("DPM++ 2M SDE Heun", "Exponential")),
    ("DPM++ 3M SDE Karras", ("DPM++ 3M SDE", "Karras")),
    ("LMS Karras", ("LMS", "Karras")),
    ("DPM2 a Karras", ("DPM2 a", "Karras")),
    ("DPM++ 2S a Karras", ("DPM++ 2S a", "Karras")),
    ("Euler SGMUniform", ("Euler", "SGM Uniform")),
    ("DPM++ 2M SDE Heun", ("DPM++ 2M SDE Heun", None)),
])
def test_combined_names_split(name, expected):
    assert sd_samplers.split_sampler_name(name) == expected


def test_resolve_reports_the_default_schedule_as_automatic():
    assert sd_samplers.resolve("DPM++ 2M Karras") == ("DPM++ 2M", "Automatic")
    assert sd_samplers.resolve("DPM++ 2M", "karras") == ("DPM++ 2M", "Automatic")
    assert sd_samplers.resolve("DPM++ 2M SDE Karras") == ("DPM++ 2M SDE", "Karras")
    assert sd_samplers.resolve("Euler", "sgm_uniform") == ("Euler", "SGM Uniform")
    assert sd_samplers.resolve("Euler", None) == ("Euler", "Automatic")
    # A schedule in the name wins over the scheduler argument (A1111's rule).
    assert sd_samplers.resolve("LMS Karras", "Exponential") == ("LMS", "Karras")


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown sampler 'Euler b'; valid: DPM\+\+ 2M, DPM\+\+ SDE, .*LCM"):
        sd_samplers.resolve("Euler b")
    with pytest.raises(ValueError, match="unknown schedule type 'Karas'; valid: Automatic, Uniform, Karras"):
        sd_samplers.resolve("Euler", "Karas")
    with pytest.raises(ValueError, match="unknown sampler"):
        sd_samplers.create_scheduler("nope", "Automatic", SD15)


def test_every_a1111_pair_with_an_effect_is_offered_and_the_rest_are_refused_with_the_reason():
    offered = {name: sd_samplers.schedules_for(name) for name in A1111_ORDER}
    every = [s.label for s in sd_samplers.schedulers]
    for name in A1111_ORDER:
        if name not in ("DDIM", "PLMS", "DPM fast"):
            assert offered[name] == every, name          # e.g. Euler a + Karras, LCM + Beta, DPM++ 2S a + Uniform
    assert offered["DDIM"] == offered["PLMS"] == ["Automatic", "Uniform", "SGM Uniform", "Simple", "Normal", "DDIM"]
    assert offered["DPM fast"] == ["Automatic"]
    with pytest.raises(ValueError, match=r"'Karras' is not available for sampler 'DDIM' \(it steps on the model's "
                                         r"own timestep grid.*valid: Automatic, Uniform"):
        sd_samplers.resolve("DDIM", "Karras")
    with pytest.raises(ValueError, match="'Karras' is not available for sampler 'DPM fast' .*valid: Automatic$"):
        sd_samplers.create_scheduler("DPM fast", "Karras", SD15)
    for name in ("DPM adaptive", "k_dpm_ad", "Restart"):
        with pytest.raises(ValueError, match="is not available here: .*no diffusers scheduler|error control"):
            sd_samplers.resolve(name)


def sigmas_of(sampler: str, schedule: str, steps: int = 10, **kw) -> list[float]:
    scheduler = sd_samplers.create_scheduler(sampler, schedule, SD15, **kw)
    scheduler.set_timesteps(steps)
    return [round(float(x), 3) for x in scheduler.sigmas]


def test_euler_a_takes_the_sigma_schedules_as_euler_does():
    for schedule in ("Karras", "Exponential", "Beta", "KL Optimal", "Align Your Steps", "Polyexponential"):
        assert sigmas_of("Euler a", schedule) == pytest.approx(sigmas_of("Euler", schedule), abs=2e-3), schedule
    assert sigmas_of("Euler a", "Karras") != sigmas_of("Euler a", "Automatic")


def test_new_schedules_are_their_closed_forms_and_published_tables():
    train = sd_samplers._train_sigmas(sd_samplers.create_scheduler("Euler", "Automatic", SD15))
    smin, smax = float(train[0]), float(train[-1])
    kl = sigmas_of("Euler", "KL Optimal", 4)
    t = [0, 1 / 3, 2 / 3, 1]
    assert kl[:4] == pytest.approx([math.tan((1 - x) * math.atan(smax) + x * math.atan(smin)) for x in t], abs=2e-3)
    assert kl[-1] == 0
    # Align Your Steps with 11 steps is NVIDIA's SD1.5 table itself (SDXL's for an SDXL model), then 0.
    assert sigmas_of("Euler", "Align Your Steps", 11)[:11] == pytest.approx(sd_samplers._AYS_SIGMAS["sd1"], abs=2e-3)
    xl = sigmas_of("Euler", "Align Your Steps", 11, family="sdxl")
    assert xl[:11] == pytest.approx(sd_samplers._AYS_SIGMAS["sdxl"], abs=2e-3)
    assert sigmas_of("DPM++ 2M", "Polyexponential") == sigmas_of("DPM++ 2M", "Exponential")  # rho 1 (A1111 default)
    for sampler in ("DPM++ 2M", "DPM++ SDE", "LMS", "Heun", "DPM2", "UniPC"):
        assert max(sigmas_of(sampler, "KL Optimal")) == pytest.approx(smax, rel=1e-3), sampler
        assert sigmas_of(sampler, "KL Optimal") != sigmas_of(sampler, "Karras"), sampler


def test_lcm_takes_a_schedule_as_timesteps():
    lcm = sd_samplers.create_scheduler("LCM", "Karras", SD15)
    lcm.set_timesteps(6)
    assert [int(t) for t in lcm.timesteps] == [999, 837, 594, 249, 30, 0]


def run_euler_a(eta: float | None, opts: Options | None = None, seed: int = 3) -> torch.Tensor:
    scheduler = sd_samplers.create_scheduler("Euler a", "Karras", SD15, eta=eta, opts=opts)
    scheduler.set_timesteps(6)
    x = torch.ones(1, 4, 8, 8) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x = scheduler.step(torch.full_like(x, 0.3), t, scheduler.scale_model_input(x, t),
                           generator=[torch.Generator().manual_seed(seed)]).prev_sample
    return x


def test_eta_ancestral_scales_euler_a_noise():
    def euler(seed=3):
        scheduler = sd_samplers.create_scheduler("Euler", "Karras", SD15)
        scheduler.set_timesteps(6)
        x = torch.ones(1, 4, 8, 8) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            x = scheduler.step(torch.full_like(x, 0.3), t, scheduler.scale_model_input(x, t)).prev_sample
        return x

    assert torch.allclose(run_euler_a(0.0), euler(), atol=1e-4)                   # eta 0: no noise, plain Euler
    assert torch.allclose(run_euler_a(None, Options(eta_ancestral=0.0)), euler(), atol=1e-4)  # from the option
    half, full = run_euler_a(0.5), run_euler_a(1.0)
    assert not torch.allclose(half, full) and not torch.allclose(half, euler())
    assert not torch.allclose(run_euler_a(0.5, seed=4), half)                     # its noise follows the generator
    assert torch.equal(run_euler_a(0.5, seed=3), half)
    assert sd_samplers.create_scheduler("Euler a", "Automatic", SD15, opts=Options(eta_ancestral=0.4)).eta_ancestral \
        == 0.4


def test_eta_other_than_one_is_refused_where_diffusers_has_none():
    with pytest.raises(ValueError, match="eta 0.5 is not available for sampler 'DPM2 a'"):
        sd_samplers.check("DPM2 a", "Automatic", opts=Options(eta_ancestral=0.5))
    sd_samplers.check("DPM2 a", "Automatic", opts=Options(eta_ancestral=1.0))
    sd_samplers.check("Euler", "Automatic", eta=0.5)   # Euler has no eta at all, as in A1111


@pytest.mark.parametrize("sampler,scheduler,expected", [
    ("DPM++ 2M", "Automatic", "Karras"), ("DPM++ 2M", "Karras", "Karras"), ("DPM++ 2M Karras", "Automatic", "Karras"),
    ("DPM++ 2M SDE", "Automatic", "Exponential"), ("DPM++ 3M SDE", "Automatic", "Exponential"),
    ("DPM++ 2M", "Uniform", "Uniform"), ("Euler a", "Automatic", "Automatic"), ("Euler", "Karras", "Karras"),
    ("DDIM", "Automatic", "Automatic"), ("UniPC", "Automatic", "Automatic"), ("LCM", "Automatic", "Automatic"),
])
def test_infotext_schedule_type(sampler, scheduler, expected):
    assert sd_samplers.infotext_schedule_type(sampler, scheduler) == expected


def test_model_config_values_are_passed_explicitly():
    # A DDIM config with its default "leading" spacing must not turn into linspace (stack-notes gotcha 3).
    ddim = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1)
    model = dict(ddim.config)
    euler_a = sd_samplers.create_scheduler("Euler a", "Automatic", model)
    assert isinstance(euler_a, EulerAncestralDiscreteScheduler)
    assert euler_a.config.timestep_spacing == "leading" and euler_a.config.steps_offset == 1
    config = euler_a.config
    assert (config.beta_schedule, config.beta_start, config.beta_end) == ("scaled_linear", 0.00085, 0.012)
    assert "timestep_spacing" not in euler_a.config.get("_use_default_values", [])


def test_missing_model_keys_use_the_model_classs_defaults():
    sd15 = sd_samplers.create_scheduler("Euler", "Automatic", SD15)
    assert sd15.config.timestep_spacing == "leading"  # PNDM's default
    euler_model = sd_samplers.create_scheduler("Euler", "Automatic", {"_class_name": "EulerDiscreteScheduler",
                                                                        "beta_schedule": "scaled_linear"})
    assert euler_model.config.timestep_spacing == "linspace" and euler_model.config.steps_offset == 0
    bare = sd_samplers.create_scheduler("DDIM", "Automatic", {})
    assert bare.config.beta_schedule == "scaled_linear"
    assert bare.config.clip_sample is False and bare.config.set_alpha_to_one is False


@pytest.mark.parametrize("schedule,flag", [("Karras", "use_karras_sigmas"), ("Exponential", "use_exponential_sigmas"),
                                           ("Beta", "use_beta_sigmas")])
def test_sigma_schedules_span_the_full_range(schedule, flag):
    scheduler = sd_samplers.create_scheduler("Euler", schedule, SD15)
    assert scheduler.config[flag] is True
    assert scheduler.config.timestep_spacing == "linspace"
    scheduler.set_timesteps(10)
    assert math.isclose(float(scheduler.sigmas[0]), 14.6146, rel_tol=1e-3)  # SD's largest training sigma


@pytest.mark.parametrize("schedule,first_timesteps", [
    ("Uniform", [999, 888]), ("SGM Uniform", [999, 899]), ("Simple", [999, 899]), ("DDIM", [901, 801]),
])
def test_spacing_schedules(schedule, first_timesteps):
    scheduler = sd_samplers.create_scheduler("Euler", schedule, SD15)
    scheduler.set_timesteps(10)
    assert [round(float(t)) for t in scheduler.timesteps[:2]] == first_timesteps


def test_dpmpp_2s_a_sgm_uniform_is_its_own_spacing():
    scheduler = sd_samplers.create_scheduler("DPM++ 2S a", "SGM Uniform", SD15)
    scheduler.set_timesteps(10)
    assert [int(t) for t in scheduler.timesteps[:3]] == [999, 899, 799]


def test_scheduler_keeps_its_diffusers_class_name():
    ddim = sd_samplers.create_scheduler("DDIM", "Automatic", SD15)
    assert isinstance(ddim, DDIMScheduler) and type(ddim).__name__ == "DDIMScheduler"
    assert json.loads(ddim.to_json_string())["_class_name"] == "DDIMScheduler"
    assert DDIMScheduler.from_config(ddim.config).config.timestep_spacing == "leading"


def test_ddim_eta_reaches_step():
    assert sd_samplers.create_scheduler("DDIM", "Automatic", SD15, eta=0.7).step_options == {"eta": 0.7}
    from_options = sd_samplers.create_scheduler("DDIM", "Automatic", SD15, opts=Options(eta_ddim=0.3))
    assert from_options.step_options == {"eta": 0.3}
    # Pipelines pass eta only when step() declares it: the configured eta must not be overridden by theirs.
    parameters = inspect.signature(from_options.step).parameters
    assert "eta" not in parameters and "generator" in parameters

    def final(configured_eta: float, **step_kwargs) -> torch.Tensor:
        scheduler = sd_samplers.create_scheduler("DDIM", "Automatic", SD15, eta=configured_eta)
        scheduler.set_timesteps(5)
        x = torch.ones(1, 4, 8, 8)
        for t in scheduler.timesteps:
            x = scheduler.step(torch.zeros_like(x), t, x, generator=torch.Generator().manual_seed(1),
                               **step_kwargs).prev_sample
        return x

    assert not torch.equal(final(0.0), final(1.0))
    assert torch.equal(final(1.0, eta=0.0), final(0.0))  # an explicit argument wins


def test_euler_and_sde_s_noise_reach_step():
    opts = Options(s_churn=2.0, s_noise=0.9, s_tmin=0.1, s_tmax=0.0)
    euler = sd_samplers.create_scheduler("Euler", "Karras", SD15, opts=opts)
    assert euler.step_options == {"s_churn": 2.0, "s_tmin": 0.1, "s_tmax": math.inf, "s_noise": 0.9}
    overridden = sd_samplers.create_scheduler("Euler", "Karras", SD15, opts=opts, s_noise=1.05)
    assert overridden.step_options["s_noise"] == 1.05
    sde = sd_samplers.create_scheduler("DPM++ SDE", "Automatic", SD15, opts=opts, noise_seeds=[1])
    assert sde.step_options == {"s_noise": 0.9}
    assert "s_noise" not in inspect.signature(sde.step).parameters

    def euler_result(s_noise: float) -> torch.Tensor:
        scheduler = sd_samplers.create_scheduler("Euler", "Karras", SD15, opts=Options(s_churn=5.0, s_noise=s_noise))
        return run_steps(scheduler, batch=1)

    assert not torch.equal(euler_result(1.0), euler_result(0.5))


def test_dpmpp_sde_noise_depends_on_each_images_seed():
    def result(seeds: list[int]) -> torch.Tensor:
        scheduler = sd_samplers.create_scheduler("DPM++ SDE", "Automatic", SD15, noise_seeds=seeds)
        scheduler.set_timesteps(6)
        x = torch.ones(len(seeds), 4, 8, 8) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            x = scheduler.step(torch.zeros_like(x), t, scheduler.scale_model_input(x, t)).prev_sample
        return x

    pair = result([5, 6])
    assert torch.allclose(pair[1], result([6])[0], atol=1e-5)
    assert torch.allclose(pair[0], result([5])[0], atol=1e-5)
    assert not torch.allclose(pair[0], pair[1])


def test_ancestral_step_noise_follows_each_images_generator():
    def result(seeds: list[int]) -> torch.Tensor:
        scheduler = sd_samplers.create_scheduler("Euler a", "Automatic", SD15)
        scheduler.set_timesteps(5)
        x = torch.ones(len(seeds), 4, 8, 8) * scheduler.init_noise_sigma
        generators = rng.generators(seeds, (4, 8, 8))
        for t in scheduler.timesteps:
            x = scheduler.step(torch.zeros_like(x), t, scheduler.scale_model_input(x, t),
                               generator=generators).prev_sample
        return x

    assert torch.equal(result([5, 6])[1], result([6])[0])
    assert torch.equal(result([7, 5])[1], result([5, 8])[0])
