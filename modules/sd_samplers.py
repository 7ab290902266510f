"""A1111 sampler and schedule-type names mapped onto configured diffusers schedulers.

A1111 (v1.10) pairs a k-diffusion *sampler* with a *schedule type* (how the sigmas/timesteps are spaced). Here a
sampler is a diffusers scheduler class with fixed solver settings, and a schedule type is either a few config values
of that scheduler (``timestep_spacing``, ``use_karras_sigmas``, ...) or, where its config cannot make it, the
schedule's own sigmas handed to the scheduler (``schedule_sigmas``): through its Karras conversion hook (every
scheduler with Karras sigmas), its sigma table (Euler a) or its custom timesteps (LCM). Polyexponential, KL Optimal
and Align Your Steps (NVIDIA's published tables) are always custom sigmas.

Every pair A1111 runs with an effect runs here, except the schedules DDIM and PLMS cannot take (they step on the
model's timestep grid: only the spacings apply) and DPM fast's (it places its own steps); those pairs are not offered
(``schedules_for``) and asking for one raises ``ValueError`` saying why. DPM adaptive and Restart have no diffusers
scheduler: they are refused by name, with the reason.

"Automatic" means the sampler's own default schedule (DPM++ 2M -> Karras, DPM++ 2M SDE -> Exponential, ...) and, for
samplers without one, the model's own timestep spacing. Karras, Exponential and Beta always span the model's full
sigma range (``timestep_spacing="linspace"``), as A1111's schedules do.

Schedulers are constructed directly with every relevant value passed explicitly (``Scheduler.from_config`` drops
values that were defaults in the source config): the model's noise schedule (``num_train_timesteps``, betas,
``prediction_type``, ``timestep_spacing``, ``steps_offset``, ...), then the schedule type, then the sampler's solver
settings. A1111's step-time options (DDIM ``eta``; Euler ``s_churn``/``s_tmin``/``s_tmax``/``s_noise``; DPM++ SDE
``s_noise``) become defaults of the returned scheduler's ``step()``. Euler a takes ``eta_ancestral`` (k-diffusion's
eta, with ``s_noise``); diffusers' other ancestral and SDE schedulers have no eta: they run with eta 1, as A1111's
default, and refuse another.
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:  # diffusers is imported on first use: listing samplers must not cost its import time
    from diffusers.schedulers.scheduling_utils import SchedulerMixin

from modules import noise_schedule
from modules.options import Options

AUTOMATIC = "Automatic"


class SamplerData(NamedTuple):
    """A sampler as A1111's ``/sdapi/v1/samplers`` lists it."""

    name: str
    aliases: list[str]
    options: dict[str, Any]


class Scheduler(NamedTuple):
    """A schedule type as A1111's ``/sdapi/v1/schedulers`` lists it."""

    name: str
    label: str
    aliases: list[str]


# A1111's order (v1.10).
schedulers: list[Scheduler] = [
    Scheduler("automatic", AUTOMATIC, []),
    Scheduler("uniform", "Uniform", []),
    Scheduler("karras", "Karras", []),
    Scheduler("exponential", "Exponential", []),
    Scheduler("polyexponential", "Polyexponential", []),
    Scheduler("sgm_uniform", "SGM Uniform", ["SGMUniform"]),
    Scheduler("kl_optimal", "KL Optimal", []),
    Scheduler("align_your_steps", "Align Your Steps", []),
    Scheduler("simple", "Simple", []),
    Scheduler("normal", "Normal", []),
    Scheduler("ddim", "DDIM", []),
    Scheduler("beta", "Beta", []),
]

# Config values of each schedule type (label -> values). Keys a scheduler class does not take are left out, e.g. the
# spacing for DPMSolverSinglestepScheduler, whose own spacing is SGM Uniform's.
_SCHEDULE_CONFIG: dict[str, dict[str, Any]] = {
    "Uniform": {"timestep_spacing": "linspace"},   # k-diffusion get_sigmas(n): linspace over the model's timesteps
    "Karras": {"use_karras_sigmas": True, "timestep_spacing": "linspace"},
    "Exponential": {"use_exponential_sigmas": True, "timestep_spacing": "linspace"},
    "SGM Uniform": {"timestep_spacing": "trailing"},  # linspace in t with the last point dropped
    "Simple": {"timestep_spacing": "trailing"},       # every (N/n)-th training sigma from the top
    "Normal": {"timestep_spacing": "linspace"},
    "DDIM": {"timestep_spacing": "leading", "steps_offset": 1},  # DDIM's stride: 1, 1+N/n, ...
    "Beta": {"use_beta_sigmas": True, "timestep_spacing": "linspace"},
}
_NO_SIGMA_OVERRIDES = {"use_karras_sigmas": False, "use_exponential_sigmas": False, "use_beta_sigmas": False}

# The model's noise schedule. When the model's config lacks a key, its scheduler class's default applies, else these
# values (Stable Diffusion's training schedule; DDIM/PLMS without clipping and with alphas_cumprod[0] as the final
# alpha, as A1111's DDIM/PLMS).
_MODEL_DEFAULTS: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "trained_betas": None,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
    "steps_offset": 1,
    "rescale_betas_zero_snr": False,
    "clip_sample": False,
    "clip_sample_range": 1.0,
    "set_alpha_to_one": False,
}

_SPACINGS = ("Uniform", "SGM Uniform", "Simple", "Normal", "DDIM")
_NATIVE = ("Uniform", "Karras", "Exponential", "SGM Uniform", "Simple", "Normal", "DDIM", "Beta")  # diffusers' config
_ALL = tuple(s.label for s in schedulers if s.label != AUTOMATIC)
_SIGMA_SCHEDULES = ("Polyexponential", "KL Optimal", "Align Your Steps")  # custom sigmas (modules.sd_schedules)
_EULER_OPTIONS = ("s_churn", "s_tmin", "s_tmax", "s_noise")


@dataclass(frozen=True)
class _Sampler:
    name: str
    aliases: tuple[str, ...]
    cls_name: str                         # diffusers scheduler class
    config: dict[str, Any]                # solver settings fixed for this sampler
    schedules: tuple[str, ...]            # labels offered besides Automatic
    default_schedule: str | None = None   # what Automatic means; None = the model's own spacing
    step_options: tuple[str, ...] = ()    # A1111 options this scheduler's step() takes
    options: dict[str, Any] = field(default_factory=dict)  # A1111's SamplerData.options
    native: tuple[str, ...] = _NATIVE     # schedules diffusers' own config values make; the others get custom sigmas
    not_offered: str = ""                 # why the schedules left out cannot run with this sampler

    @property
    def cls(self) -> type[SchedulerMixin]:
        import diffusers

        return getattr(diffusers, self.cls_name)


def _dpm_multistep(order: int, algorithm: str, solver: str = "midpoint") -> dict[str, Any]:
    return {"solver_order": order, "algorithm_type": algorithm, "solver_type": solver, "lower_order_final": True,
            "euler_at_final": False, "final_sigmas_type": "zero"}


_TIMESTEP_GRID = ("steps on the model's own timestep grid (its diffusers scheduler takes no custom sigmas), so only "
                  "the timestep spacings apply")

_SAMPLERS: list[_Sampler] = [
    _Sampler("DPM++ 2M", ("k_dpmpp_2m",), "DPMSolverMultistepScheduler", _dpm_multistep(2, "dpmsolver++"), _ALL,
             "Karras", options={"scheduler": "karras"}),
    _Sampler("DPM++ SDE", ("k_dpmpp_sde",), "DPMSolverSDEScheduler", {}, _ALL, "Karras", ("s_noise",),
             options={"scheduler": "karras", "second_order": True, "brownian_noise": True}),
    _Sampler("DPM++ 2M SDE", ("k_dpmpp_2m_sde",), "DPMSolverMultistepScheduler", _dpm_multistep(2, "sde-dpmsolver++"),
             _ALL, "Exponential", options={"scheduler": "exponential", "brownian_noise": True}),
    _Sampler("DPM++ 2M SDE Heun", ("k_dpmpp_2m_sde_heun",), "DPMSolverMultistepScheduler",
             _dpm_multistep(2, "sde-dpmsolver++", "heun"), _ALL, "Exponential",
             options={"scheduler": "exponential", "brownian_noise": True, "solver_type": "heun"}),
    _Sampler("DPM++ 2S a", ("k_dpmpp_2s_a",), "DPMSolverSinglestepScheduler",
             {"solver_order": 2, "algorithm_type": "sde-dpmsolver++", "solver_type": "midpoint",
              "lower_order_final": True, "final_sigmas_type": "zero"},
             _ALL, "Karras", options={"scheduler": "karras", "uses_ensd": True, "second_order": True},
             native=("Karras", "Exponential", "SGM Uniform", "Beta")),
    _Sampler("DPM++ 3M SDE", ("k_dpmpp_3m_sde",), "DPMSolverMultistepScheduler", _dpm_multistep(3, "sde-dpmsolver++"),
             _ALL, "Exponential", options={"scheduler": "exponential", "discard_next_to_last_sigma": True,
                                           "brownian_noise": True}),
    _Sampler("Euler a", ("k_euler_a", "k_euler_ancestral"), "EulerAncestralDiscreteScheduler", {}, _ALL,
             options={"uses_ensd": True}, native=_SPACINGS),
    _Sampler("Euler", ("k_euler",), "EulerDiscreteScheduler",
             {"interpolation_type": "linear", "timestep_type": "discrete", "final_sigmas_type": "zero"}, _ALL,
             step_options=_EULER_OPTIONS),
    _Sampler("LMS", ("k_lms",), "LMSDiscreteScheduler", {}, _ALL),
    _Sampler("Heun", ("k_heun",), "HeunDiscreteScheduler", {}, _ALL, options={"second_order": True}),
    _Sampler("DPM2", ("k_dpm_2",), "KDPM2DiscreteScheduler", {}, _ALL, "Karras",
             options={"scheduler": "karras", "discard_next_to_last_sigma": True, "second_order": True}),
    _Sampler("DPM2 a", ("k_dpm_2_a",), "KDPM2AncestralDiscreteScheduler", {}, _ALL, "Karras",
             options={"scheduler": "karras", "discard_next_to_last_sigma": True, "uses_ensd": True,
                      "second_order": True}),
    # k-diffusion's DPM-Solver-fast: DPM-Solver (not ++) of orders 3, 3, ..., 2/1 on steps uniform in log-SNR (=
    # exponential sigmas) from sigma_max to sigma_min; diffusers' single-step DPM-Solver uses the same order list.
    _Sampler("DPM fast", ("k_dpm_fast",), "DPMSolverSinglestepScheduler",
             {"solver_order": 3, "algorithm_type": "dpmsolver", "solver_type": "midpoint", "lower_order_final": True,
              "final_sigmas_type": "sigma_min", "use_exponential_sigmas": True, "timestep_spacing": "linspace"},
             (), options={"uses_ensd": True}, native=(),
             not_offered="places its own steps (uniform in log-SNR, as k-diffusion's DPM fast)"),
    _Sampler("DDIM", ("ddim",), "DDIMScheduler", {}, _SPACINGS, step_options=("eta",), native=_SPACINGS,
             not_offered=_TIMESTEP_GRID),
    _Sampler("PLMS", ("plms",), "PNDMScheduler", {"skip_prk_steps": True}, _SPACINGS, native=_SPACINGS,
             not_offered=_TIMESTEP_GRID),
    # A1111's UniPC: variant bh1, order 3, lower order final, ending at the smallest training sigma (bh1 cannot
    # step to sigma 0: diffusers returns NaN).
    _Sampler("UniPC", ("unipc",), "UniPCMultistepScheduler",
             {"solver_type": "bh1", "solver_order": 3, "lower_order_final": True, "predict_x0": True,
              "final_sigmas_type": "sigma_min"}, _ALL),
    _Sampler("LCM", ("k_lcm",), "LCMScheduler", {}, _ALL, native=()),
]

# A1111 samplers with no diffusers scheduler: named, refused with the reason, never offered.
_UNAVAILABLE: dict[str, str] = {
    "DPM adaptive": "DPM adaptive chooses its own number of steps by error control, which no diffusers scheduler "
                    "implements",
    "Restart": "Restart (re-noising Heun segments) has no diffusers scheduler",
}
_UNAVAILABLE_BY_KEY = {key.casefold(): name for name, keys in
                       (("DPM adaptive", ("DPM adaptive", "k_dpm_ad")), ("Restart", ("Restart", "restart")))
                       for key in keys}

samplers: list[SamplerData] = [SamplerData(s.name, list(s.aliases), dict(s.options)) for s in _SAMPLERS]

_SAMPLER_BY_KEY: dict[str, _Sampler] = {key.casefold(): s for s in _SAMPLERS for key in (s.name, *s.aliases)}
_SCHEDULE_BY_KEY: dict[str, Scheduler] = {
    key.casefold(): s for s in schedulers for key in (s.name, s.label, *s.aliases)}


def visible_sampler_names() -> list[str]:
    """Sampler names for the UI dropdown, in A1111's order (the first is the UI default)."""
    return [s.name for s in _SAMPLERS]


def _valid_samplers() -> str:
    return ", ".join(s.name for s in _SAMPLERS)


def _valid_schedules(sampler: _Sampler | None = None) -> str:
    if sampler is None:
        return ", ".join(s.label for s in schedulers)
    return ", ".join((AUTOMATIC, *sampler.schedules))


def _schedule_label(name: str) -> str:
    found = _SCHEDULE_BY_KEY.get(name.casefold())
    if found is None:
        raise ValueError(f"unknown schedule type {name!r}; valid: {_valid_schedules()}")
    return found.label


def split_sampler_name(name: str) -> tuple[str, str | None]:
    """``(sampler name, schedule label or None)`` for a sampler name, alias or pre-1.9 combined name.

    ``"k_euler_a"`` -> ``("Euler a", None)``; ``"DPM++ 2M Karras"`` -> ``("DPM++ 2M", "Karras")``.
    """
    found = _SAMPLER_BY_KEY.get(name.casefold())
    if found is not None:
        return found.name, None
    folded = name.casefold()
    for schedule in schedulers:
        for suffix in (schedule.label, *schedule.aliases):
            if folded.endswith(" " + suffix.casefold()):
                head = _SAMPLER_BY_KEY.get(folded[:-len(suffix) - 1])
                if head is not None:
                    return head.name, schedule.label
    unavailable = _UNAVAILABLE_BY_KEY.get(folded)
    if unavailable is not None:
        raise ValueError(f"sampler {unavailable!r} is not available here: {_UNAVAILABLE[unavailable]}; "
                         f"valid: {_valid_samplers()}")
    raise ValueError(f"unknown sampler {name!r}; valid: {_valid_samplers()}")


def resolve(sampler_name: str, scheduler: str | None = AUTOMATIC) -> tuple[str, str]:
    """Canonical ``(sampler name, schedule label)``, as A1111 resolves them.

    A schedule suffix in the sampler name (``"DPM++ 2M SDE Karras"``) wins over ``scheduler``; a schedule equal to the
    sampler's default is reported as ``"Automatic"``. Raises ``ValueError`` listing the valid names for an unknown
    sampler or schedule, or the sampler's schedules when diffusers does not implement that pair.
    """
    name, suffix_schedule = split_sampler_name(sampler_name)
    sampler = _SAMPLER_BY_KEY[name.casefold()]
    label = suffix_schedule or _schedule_label(scheduler or AUTOMATIC)
    if label == sampler.default_schedule:
        label = AUTOMATIC
    if label != AUTOMATIC and label not in sampler.schedules:
        why = f" (it {sampler.not_offered})" if sampler.not_offered else ""
        raise ValueError(f"schedule type {label!r} is not available for sampler {sampler.name!r}{why}; "
                         f"valid: {_valid_schedules(sampler)}")
    return sampler.name, label


def schedules_for(sampler_name: str) -> list[str]:
    """The schedule labels offered with a sampler (Automatic first), for the UI's schedule dropdown."""
    name, _ = split_sampler_name(sampler_name)
    offered = set(_SAMPLER_BY_KEY[name.casefold()].schedules)
    return [s.label for s in schedulers if s.label == AUTOMATIC or s.label in offered]


def uses_ensd(sampler_name: str) -> bool:
    """Whether the sampler draws per-step noise that A1111's eta noise seed delta (ENSD) offsets."""
    name, _ = split_sampler_name(sampler_name)
    return bool(_SAMPLER_BY_KEY[name.casefold()].options.get("uses_ensd"))


def infotext_schedule_type(sampler_name: str, scheduler: str | None = AUTOMATIC) -> str:
    """The infotext's ``Schedule type``: the sampler's default when Automatic resolves to one, else the label."""
    name, label = resolve(sampler_name, scheduler)
    if label == AUTOMATIC:
        return _SAMPLER_BY_KEY[name.casefold()].default_schedule or AUTOMATIC
    return label


def create_scheduler(sampler_name: str, scheduler: str | None, model_scheduler_config: Mapping[str, Any], *,
                     eta: float | None = None, opts: Options | None = None,
                     s_churn: float | None = None, s_tmin: float | None = None, s_tmax: float | None = None,
                     s_noise: float | None = None, noise_seeds: Sequence[int] | None = None,
                     family: str | None = None, zero_terminal_snr: bool = False) -> SchedulerMixin:
    """A fresh diffusers scheduler for ``sampler_name`` + ``scheduler`` on the model's noise schedule.

    ``eta`` and ``s_*`` override the options (``opts.eta_ddim``, ``opts.eta_ancestral``, ``opts.s_churn``, ...), as
    A1111's per-request values do; they reach ``step()`` of the samplers whose diffusers scheduler takes them.
    ``noise_seeds`` (one per image of the batch) seed DPM++ SDE's Brownian-tree noise so each image's noise depends
    only on its own seed; without them the tree has the fixed seed 0. ``family`` picks Align Your Steps' table.
    ``zero_terminal_snr`` samples on the model's betas rescaled to zero terminal SNR, from the last timestep
    (``modules.noise_schedule``); a schedule type that cannot start there raises ``ValueError``.

    Schedule types that a scheduler's own config cannot make (Polyexponential, KL Optimal, Align Your Steps, and e.g.
    Karras for Euler a) are given to it as custom sigmas: through its Karras hook, its ``sigmas`` or its
    ``timesteps`` (LCM). An ancestral/SDE sampler other than Euler a refuses an ``eta`` other than 1 (diffusers' have
    none), with a ``ValueError`` that says so.
    """
    name, label = resolve(sampler_name, scheduler)
    sampler = _SAMPLER_BY_KEY[name.casefold()]
    opts = opts or Options()
    schedule = label if label != AUTOMATIC else sampler.default_schedule
    custom = schedule if schedule and schedule not in sampler.native else None
    model_values = _model_values(model_scheduler_config)
    if zero_terminal_snr:
        noise_schedule.check_schedule(sampler.name, schedule)
        model_values = noise_schedule.scheduler_values(model_values, sampler.cls_name)
    values = {
        **model_values,
        **_NO_SIGMA_OVERRIDES,
        **(_SCHEDULE_CONFIG[schedule] if schedule and not custom else {}),
        **({"timestep_spacing": "linspace"} if custom else {}),
        **sampler.config,
    }
    cls = sampler.cls
    if sampler.cls_name == "DPMSolverSDEScheduler":
        values["noise_sampler_seed"] = list(noise_seeds) if noise_seeds is not None else 0
    accepted = inspect.signature(cls.__init__).parameters
    eta_ancestral = _ancestral_eta(sampler, eta, opts)
    route = None
    if custom:
        route = ("karras" if "use_karras_sigmas" in accepted else
                 "timesteps" if sampler.cls_name == "LCMScheduler" else "sigmas")
        if route == "karras":
            values["use_karras_sigmas"] = True  # its Karras conversion is replaced by the schedule's sigmas
    kwargs = {key: value for key, value in values.items() if key in accepted}
    if not sampler.step_options and route is None and eta_ancestral is None:
        return cls(**kwargs)
    instance = _extended(cls, sampler.step_options, route, eta_ancestral is not None)(**kwargs)
    overrides = {"eta": eta, "s_churn": s_churn, "s_tmin": s_tmin, "s_tmax": s_tmax, "s_noise": s_noise}
    instance.step_options = _step_option_values(sampler.step_options, overrides, opts)
    instance.custom_schedule = (custom, family) if custom else None
    instance.eta_ancestral = eta_ancestral
    instance.ancestral_s_noise = s_noise if s_noise is not None else opts.s_noise
    return instance


def check(sampler_name: str, scheduler: str | None, *, eta: float | None = None, opts: Options | None = None,
          zero_terminal_snr: bool = False, steps: int | None = None) -> None:
    """Raise ``ValueError`` (saying why) for a sampler, schedule, eta or step count this job could not run with."""
    name, label = resolve(sampler_name, scheduler)
    sampler = _SAMPLER_BY_KEY[name.casefold()]
    _ancestral_eta(sampler, eta, opts or Options())
    if zero_terminal_snr:
        schedule = label if label != AUTOMATIC else sampler.default_schedule
        noise_schedule.check_schedule(sampler.name, schedule)
        noise_schedule.check_steps(sampler.name, schedule, steps)


def _ancestral_eta(sampler: _Sampler, eta: float | None, opts: Options) -> float | None:
    """Euler a's eta when it is not 1 (``eta`` of the request, else ``opts.eta_ancestral``); None for eta 1."""
    if not (sampler.options.get("uses_ensd") or sampler.options.get("brownian_noise")):
        return None
    value = eta if eta is not None else opts.eta_ancestral
    if value == 1.0:
        return None
    if sampler.name != "Euler a":
        raise ValueError(f"eta {value:g} is not available for sampler {sampler.name!r}: its diffusers scheduler "
                         f"always adds the full ancestral noise (eta 1); Euler a and DDIM take another eta")
    return float(value)


# -- schedule types as sigmas -------------------------------------------------------------------------------------
# Align Your Steps (Sabour et al., NVIDIA 2024): the published 10-step sigma schedules; other step counts are
# log-linear interpolations of them.
_AYS_SIGMAS = {
    "sd1": [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029],
    "sdxl": [14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029],
}


def _spacing_timesteps(spacing: str, n: int, num_train: int) -> np.ndarray:
    if spacing == "linspace":
        return np.linspace(0, num_train - 1, n)[::-1].copy()
    if spacing == "leading":
        return (np.arange(0, n) * (num_train // n)).round()[::-1].astype(np.float64) + 1
    return np.arange(num_train, 0, -num_train / n).round().astype(np.float64) - 1   # trailing


def schedule_sigmas(label: str, n: int, train_sigmas: np.ndarray, family: str | None = None) -> np.ndarray:
    """``n`` descending sigmas of a schedule type (the final 0 / sigma_min is the scheduler's), on a model whose
    training sigmas (ascending in t) are ``train_sigmas``."""
    smin, smax = float(train_sigmas[0]), float(train_sigmas[-1])
    ramp = np.linspace(0, 1, n)
    if label == "Karras":  # Karras et al. 2022, rho 7
        rho = 7.0
        return (smax ** (1 / rho) + ramp * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
    if label in ("Exponential", "Polyexponential"):  # polyexponential with A1111's default rho 1 is exponential
        rho = 1.0
        return np.exp((1 - ramp) ** rho * (np.log(smax) - np.log(smin)) + np.log(smin))
    if label == "KL Optimal":  # sigma(t) = tan((1 - t) atan(sigma_max) + t atan(sigma_min))
        return np.tan((1 - ramp) * np.arctan(smax) + ramp * np.arctan(smin))
    if label == "Align Your Steps":
        table = np.log(np.array(_AYS_SIGMAS["sdxl" if family in ("sdxl", "sdxl-refiner") else "sd1"]))
        return np.exp(np.interp(ramp, np.linspace(0, 1, len(table)), table))
    if label == "Beta":  # diffusers' Beta sigmas: the beta(0.6, 0.6) quantiles between sigma_min and sigma_max
        import scipy.stats

        return smin + scipy.stats.beta.ppf(1 - ramp, 0.6, 0.6) * (smax - smin)
    spacing = _SCHEDULE_CONFIG[label]["timestep_spacing"]
    timesteps = _spacing_timesteps(spacing, n, len(train_sigmas))
    return np.interp(timesteps, np.arange(len(train_sigmas)), train_sigmas)


def _train_sigmas(scheduler: Any) -> np.ndarray:
    alphas = np.asarray(scheduler.alphas_cumprod, dtype=np.float64)
    return ((1 - alphas) / alphas) ** 0.5


def _sigmas_to_timesteps(sigmas: np.ndarray, train_sigmas: np.ndarray) -> np.ndarray:
    return np.interp(np.log(sigmas), np.log(train_sigmas), np.arange(len(train_sigmas)))


@cache
def _extended(base: type[SchedulerMixin], option_names: tuple[str, ...], route: str | None,
              ancestral_eta: bool) -> type[SchedulerMixin]:
    """A subclass of ``base`` (same class name, so saved configs load as ``base``) that

    - takes ``option_names`` in ``step()`` from ``self.step_options`` (left out of ``step()``'s signature, so
      diffusers pipelines, which pass ``eta`` only when ``step()`` declares it, keep the configured value; explicit
      keyword arguments still win);
    - ``route``: runs ``self.custom_schedule``'s sigmas through the scheduler's Karras hook, its sigmas, or (LCM) its
      custom timesteps;
    - ``ancestral_eta``: Euler a's step with ``self.eta_ancestral``.
    """
    import torch

    members: dict[str, Any] = {"__module__": __name__, "__doc__": base.__doc__}
    if option_names:
        signature = inspect.signature(base.step)

        def step(self: Any, model_output: Any, timestep: Any, sample: Any, **kwargs: Any) -> Any:
            return base.step(self, model_output, timestep, sample, **{**self.step_options, **kwargs})

        step.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[p for p in signature.parameters.values() if p.name not in option_names])
        members["step"] = step

    def custom_sigmas(self: Any, n: int) -> np.ndarray:
        label, family = self.custom_schedule
        return schedule_sigmas(label, n, _train_sigmas(self), family)

    if route == "karras":
        def _convert_to_karras(self: Any, in_sigmas: Any, num_inference_steps: int | None = None) -> Any:
            if getattr(self, "custom_schedule", None) is None:  # set_timesteps from __init__, before it is set
                args = (in_sigmas,) if num_inference_steps is None else (in_sigmas, num_inference_steps)
                return base._convert_to_karras(self, *args)
            sigmas = custom_sigmas(self, num_inference_steps or self.num_inference_steps)
            if isinstance(in_sigmas, torch.Tensor):
                return torch.from_numpy(sigmas).to(in_sigmas)
            return sigmas.astype(np.asarray(in_sigmas).dtype)

        members["_convert_to_karras"] = _convert_to_karras
    elif route == "sigmas":   # Euler a: its sigmas and timesteps replaced after its own set_timesteps
        def set_timesteps(self: Any, num_inference_steps: int, device: Any = None) -> None:
            base.set_timesteps(self, num_inference_steps, device)
            sigmas = custom_sigmas(self, num_inference_steps)
            timesteps = _sigmas_to_timesteps(sigmas, _train_sigmas(self))
            self.sigmas = torch.from_numpy(np.append(sigmas, 0.0).astype(np.float32))
            self.timesteps = torch.from_numpy(timesteps.astype(np.float32)).to(device=device)

        members["set_timesteps"] = set_timesteps
    elif route == "timesteps":  # LCM: the schedule's sigmas as (whole, distinct) timesteps
        def set_timesteps(self: Any, num_inference_steps: int | None = None, device: Any = None, **kwargs: Any) -> None:
            if num_inference_steps is None:
                return base.set_timesteps(self, None, device, **kwargs)
            train = _train_sigmas(self)
            timesteps = _sigmas_to_timesteps(custom_sigmas(self, num_inference_steps), train).round().astype(int)
            timesteps = np.unique(np.clip(timesteps, 0, len(train) - 1))[::-1]
            return base.set_timesteps(self, None, device, timesteps=[int(t) for t in timesteps], **kwargs)

        members["set_timesteps"] = set_timesteps
    if ancestral_eta:
        members["step"] = _euler_ancestral_eta_step(base)
    return type(base.__name__, (base,), members)


def _euler_ancestral_eta_step(base: type[SchedulerMixin]) -> Any:
    """Euler a with k-diffusion's eta: the ancestral noise ``sigma_up`` scaled by eta (diffusers' step has eta 1)."""
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    def step(self: Any, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor,
             generator: Any = None, return_dict: bool = True) -> Any:
        if self.step_index is None:
            self._init_step_index(timestep)
        sigma_from, sigma_to = self.sigmas[self.step_index], self.sigmas[self.step_index + 1]
        sample = sample.to(torch.float32)
        if self.config.prediction_type == "epsilon":
            denoised = sample - sigma_from * model_output
        elif self.config.prediction_type == "v_prediction":
            denoised = model_output * (-sigma_from / (sigma_from ** 2 + 1) ** 0.5) + sample / (sigma_from ** 2 + 1)
        else:
            raise ValueError(f"prediction_type {self.config.prediction_type!r} is not supported with eta")
        eta = self.eta_ancestral
        sigma_up = torch.minimum(sigma_to, eta * (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2)
                                                  / sigma_from ** 2) ** 0.5)
        sigma_down = (sigma_to ** 2 - sigma_up ** 2) ** 0.5
        prev = sample + (sample - denoised) / sigma_from * (sigma_down - sigma_from)
        noise = randn_tensor(model_output.shape, dtype=model_output.dtype, device=model_output.device,
                             generator=generator)
        prev = (prev + noise * sigma_up * self.ancestral_s_noise).to(model_output.dtype)
        self._step_index += 1
        if not return_dict:
            return (prev, denoised)
        return _euler_a_output(prev, denoised)

    step.__signature__ = inspect.signature(base.step)  # type: ignore[attr-defined]
    return step


def _euler_a_output(prev: Any, denoised: Any) -> Any:
    from diffusers.schedulers.scheduling_euler_ancestral_discrete import EulerAncestralDiscreteSchedulerOutput

    return EulerAncestralDiscreteSchedulerOutput(prev_sample=prev, pred_original_sample=denoised)


def _model_values(config: Mapping[str, Any]) -> dict[str, Any]:
    """The model's noise schedule: its config's values, else its scheduler class's defaults, else SD's."""
    import diffusers
    from diffusers.schedulers.scheduling_utils import SchedulerMixin

    class_defaults: dict[str, Any] = {}
    model_cls = getattr(diffusers, str(config.get("_class_name", "")), None)
    if isinstance(model_cls, type) and issubclass(model_cls, SchedulerMixin):
        class_defaults = {name: p.default for name, p in inspect.signature(model_cls.__init__).parameters.items()
                          if p.default is not inspect.Parameter.empty}
    return {key: config.get(key, class_defaults.get(key, default)) for key, default in _MODEL_DEFAULTS.items()}


def _step_option_values(names: tuple[str, ...], overrides: dict[str, float | None], opts: Options) -> dict[str, float]:
    from_options = {"eta": opts.eta_ddim, "s_churn": opts.s_churn, "s_tmin": opts.s_tmin, "s_tmax": opts.s_tmax,
                    "s_noise": opts.s_noise}
    values = {name: overrides[name] if overrides[name] is not None else from_options[name] for name in names}
    if "s_tmax" in values and values["s_tmax"] == 0:
        values["s_tmax"] = float("inf")  # A1111: 0 means no upper bound
    return values
