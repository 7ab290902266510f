"""A1111 sampler and schedule-type names mapped onto configured diffusers schedulers.

A1111 (v1.10) pairs a k-diffusion *sampler* with a *schedule type* (how the sigmas/timesteps are spaced). Here a
sampler is a diffusers scheduler class with fixed solver settings, and a schedule type is a few config values
(``timestep_spacing``, ``use_karras_sigmas``, ...). Only the pairs diffusers really implements are offered; asking for
another pair (e.g. Euler a + Karras: ``EulerAncestralDiscreteScheduler`` has no Karras sigmas) raises ``ValueError``
naming the schedules that sampler does support.

"Automatic" means the sampler's own default schedule (DPM++ 2M -> Karras, DPM++ 2M SDE -> Exponential, ...) and, for
samplers without one, the model's own timestep spacing. Karras, Exponential and Beta always span the model's full
sigma range (``timestep_spacing="linspace"``), as A1111's schedules do.

Schedulers are constructed directly with every relevant value passed explicitly (``Scheduler.from_config`` drops
values that were defaults in the source config): the model's noise schedule (``num_train_timesteps``, betas,
``prediction_type``, ``timestep_spacing``, ``steps_offset``, ...), then the schedule type, then the sampler's solver
settings. A1111's step-time options (DDIM ``eta``; Euler ``s_churn``/``s_tmin``/``s_tmax``/``s_noise``; DPM++ SDE
``s_noise``) become defaults of the returned scheduler's ``step()``. diffusers' ancestral and SDE schedulers other
than those have no ``eta``/``s_noise``: they always run as A1111 does with the default eta 1 and s_noise 1.
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:  # diffusers is imported on first use: listing samplers must not cost its import time
    from diffusers.schedulers.scheduling_utils import SchedulerMixin

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


# A1111's order (v1.10), limited to what diffusers implements.
schedulers: list[Scheduler] = [
    Scheduler("automatic", AUTOMATIC, []),
    Scheduler("uniform", "Uniform", []),
    Scheduler("karras", "Karras", []),
    Scheduler("exponential", "Exponential", []),
    Scheduler("sgm_uniform", "SGM Uniform", ["SGMUniform"]),
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
_ALL = ("Uniform", "Karras", "Exponential", "SGM Uniform", "Simple", "Normal", "DDIM", "Beta")
_EULER_OPTIONS = ("s_churn", "s_tmin", "s_tmax", "s_noise")


@dataclass(frozen=True)
class _Sampler:
    name: str
    aliases: tuple[str, ...]
    cls_name: str                         # diffusers scheduler class
    config: dict[str, Any]                # solver settings fixed for this sampler
    schedules: tuple[str, ...]            # labels besides Automatic that diffusers implements for it
    default_schedule: str | None = None   # what Automatic means; None = the model's own spacing
    step_options: tuple[str, ...] = ()    # A1111 options this scheduler's step() takes
    options: dict[str, Any] = field(default_factory=dict)  # A1111's SamplerData.options

    @property
    def cls(self) -> type[SchedulerMixin]:
        import diffusers

        return getattr(diffusers, self.cls_name)


def _dpm_multistep(order: int, algorithm: str, solver: str = "midpoint") -> dict[str, Any]:
    return {"solver_order": order, "algorithm_type": algorithm, "solver_type": solver, "lower_order_final": True,
            "euler_at_final": False, "final_sigmas_type": "zero"}


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
             ("Karras", "Exponential", "SGM Uniform", "Beta"), "Karras",
             options={"scheduler": "karras", "uses_ensd": True, "second_order": True}),
    _Sampler("DPM++ 3M SDE", ("k_dpmpp_3m_sde",), "DPMSolverMultistepScheduler", _dpm_multistep(3, "sde-dpmsolver++"),
             _ALL, "Exponential", options={"scheduler": "exponential", "discard_next_to_last_sigma": True,
                                           "brownian_noise": True}),
    _Sampler("Euler a", ("k_euler_a", "k_euler_ancestral"), "EulerAncestralDiscreteScheduler", {}, _SPACINGS,
             options={"uses_ensd": True}),
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
    _Sampler("DDIM", ("ddim",), "DDIMScheduler", {}, _SPACINGS, step_options=("eta",)),
    _Sampler("PLMS", ("plms",), "PNDMScheduler", {"skip_prk_steps": True}, _SPACINGS),
    # A1111's UniPC: variant bh1, order 3, lower order final, ending at the smallest training sigma (bh1 cannot
    # step to sigma 0: diffusers returns NaN).
    _Sampler("UniPC", ("unipc",), "UniPCMultistepScheduler",
             {"solver_type": "bh1", "solver_order": 3, "lower_order_final": True, "predict_x0": True,
              "final_sigmas_type": "sigma_min"}, _ALL),
    _Sampler("LCM", ("k_lcm",), "LCMScheduler", {}, ()),
]

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
        raise ValueError(f"schedule type {label!r} is not available for sampler {sampler.name!r}; "
                         f"valid: {_valid_schedules(sampler)}")
    return sampler.name, label


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
                     s_noise: float | None = None, noise_seeds: Sequence[int] | None = None) -> SchedulerMixin:
    """A fresh diffusers scheduler for ``sampler_name`` + ``scheduler`` on the model's noise schedule.

    ``eta`` and ``s_*`` override the options (``opts.eta_ddim``, ``opts.s_churn``, ...), as A1111's per-request
    values do; they reach ``step()`` of the samplers whose diffusers scheduler takes them. ``noise_seeds`` (one per
    image of the batch) seed DPM++ SDE's Brownian-tree noise so each image's noise depends only on its own seed;
    without them the tree has the fixed seed 0.
    """
    name, label = resolve(sampler_name, scheduler)
    sampler = _SAMPLER_BY_KEY[name.casefold()]
    schedule = label if label != AUTOMATIC else sampler.default_schedule
    values = {
        **_model_values(model_scheduler_config),
        **_NO_SIGMA_OVERRIDES,
        **(_SCHEDULE_CONFIG[schedule] if schedule else {}),
        **sampler.config,
    }
    cls = sampler.cls
    if sampler.cls_name == "DPMSolverSDEScheduler":
        values["noise_sampler_seed"] = list(noise_seeds) if noise_seeds is not None else 0
    accepted = inspect.signature(cls.__init__).parameters
    kwargs = {key: value for key, value in values.items() if key in accepted}
    if not sampler.step_options:
        return cls(**kwargs)
    instance = _with_step_options(cls, sampler.step_options)(**kwargs)
    overrides = {"eta": eta, "s_churn": s_churn, "s_tmin": s_tmin, "s_tmax": s_tmax, "s_noise": s_noise}
    instance.step_options = _step_option_values(sampler.step_options, overrides, opts or Options())
    return instance


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


@cache
def _with_step_options(base: type[SchedulerMixin], option_names: tuple[str, ...]) -> type[SchedulerMixin]:
    """A subclass of ``base`` (same class name, so saved configs load as ``base``) whose ``step()`` takes
    ``option_names`` from ``self.step_options``.

    The options are left out of ``step()``'s signature, so diffusers pipelines, which pass ``eta`` only when
    ``step()`` declares it, keep the configured value; explicit keyword arguments still win.
    """
    signature = inspect.signature(base.step)

    def step(self: Any, model_output: Any, timestep: Any, sample: Any, **kwargs: Any) -> Any:
        return base.step(self, model_output, timestep, sample, **{**self.step_options, **kwargs})

    step.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p for p in signature.parameters.values() if p.name not in option_names])
    return type(base.__name__, (base,), {"step": step, "__module__": __name__, "__doc__": base.__doc__})
