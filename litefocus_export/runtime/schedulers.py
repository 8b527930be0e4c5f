"""Numpy re-implementations of diffusers' DDIM and DPM-Solver++ (2M) schedulers, for the torch-free runtime.

Each scheduler mirrors its diffusers namesake (``DDIMScheduler``, ``DPMSolverMultistepScheduler``) step
for step: settings are frozen in a config dataclass, ``set_timesteps`` sets the mutable state and ``step``
returns a :class:`SchedulerOutput`. Parity with diffusers (torch, float32) is the contract, so every value
diffusers keeps as a float32 tensor is a float32 here, computed by the same operations in the same order.
Options diffusers has but we do not implement are config fields restricted to their default (a ``Literal``),
so asking for one is a clear error instead of a silently different schedule.

Why one module over ~400 lines: the two schedulers share their beta schedules, timestep spacing and config
conversion (diffusers' ``from_config`` rules); split, each half would import the other's helpers.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin, get_type_hints

import numpy as np

from litefocus_export.core.choices import SchedulerName
from litefocus_export.core.contract import USE_DEFAULT_VALUES
from litefocus_export.core.errors import UsageError

BetaSchedule = Literal["linear", "scaled_linear", "squaredcos_cap_v2"]
PredictionType = Literal["epsilon", "v_prediction", "sample"]
TimestepSpacing = Literal["leading", "trailing", "linspace"]
Off = Literal[False]  # a diffusers option whose non-default value we do not implement
# the config key where diffusers lists the arguments a scheduler took from its class's defaults (its
# save_config drops it; the export writes it back, so the runtime can resolve a conversion like diffusers)

_F32 = np.float32
# float32 1: with NumPy 1.x a Python 1 next to a float32 scalar makes float64 (value-based casting), not with 2.x
_ONE = _F32(1.0)


class SchedulerConfigError(UsageError, ValueError):
    """A scheduler option is invalid or not implemented by the numpy runtime."""


@dataclass(frozen=True)
class SchedulerOutput:
    """Result of one ``step``: ``x_{t-1}`` and the model's estimate of ``x_0`` at ``t``."""

    prev_sample: np.ndarray
    pred_original_sample: np.ndarray


# The three elementary functions, on float32 scalars or arrays. Everything else is IEEE float32 arithmetic
# in diffusers' order, so these are the only place where results can differ from torch's by rounding: we
# round correctly (sqrt natively, log/exp via float64), torch's CPU kernels are within about an ulp.
def _sqrt(x: Any) -> Any:
    return np.sqrt(x)


def _log(x: Any) -> Any:
    with np.errstate(divide="ignore"):  # log(sigma = 0) = -inf: lambda of a final step that ends at x_0
        return np.log(np.asarray(x, dtype=np.float64)).astype(_F32)[()]


def _exp(x: Any) -> Any:
    with np.errstate(over="ignore"):
        return np.exp(np.asarray(x, dtype=np.float64)).astype(_F32)[()]


@dataclass(frozen=True)
class _NoiseScheduleConfig:
    """Settings shared by both schedulers: the training noise schedule and the model parameterisation."""

    num_train_timesteps: int = 1000
    beta_start: float = 0.0001
    beta_end: float = 0.02
    beta_schedule: BetaSchedule = "linear"
    trained_betas: tuple[float, ...] | None = None
    prediction_type: PredictionType = "epsilon"
    timestep_spacing: TimestepSpacing = "leading"
    steps_offset: int = 0
    rescale_betas_zero_snr: bool = False
    thresholding: Off = False

    def __post_init__(self) -> None:
        if self.trained_betas is not None:
            object.__setattr__(self, "trained_betas", tuple(float(b) for b in self.trained_betas))
            if len(self.trained_betas) != self.num_train_timesteps:
                raise SchedulerConfigError(
                    f"trained_betas has {len(self.trained_betas)} values but num_train_timesteps is "
                    f"{self.num_train_timesteps}"
                )
        if self.num_train_timesteps < 1:
            raise SchedulerConfigError(f"num_train_timesteps must be >= 1, got {self.num_train_timesteps}")
        for name, hint in get_type_hints(type(self)).items():
            if get_origin(hint) is Literal and getattr(self, name) not in get_args(hint):
                raise SchedulerConfigError(
                    f"{type(self).__name__[:-6]} option {name}={getattr(self, name)!r} is not supported "
                    f"by the numpy runtime; choices: {', '.join(repr(c) for c in get_args(hint))}"
                )


@dataclass(frozen=True)
class DDIMSchedulerConfig(_NoiseScheduleConfig):
    """Settings of :class:`DDIMScheduler`; names and defaults are diffusers' ``DDIMScheduler`` arguments."""

    clip_sample: bool = True
    clip_sample_range: float = 1.0
    set_alpha_to_one: bool = True


@dataclass(frozen=True)
class DPMSolverMultistepSchedulerConfig(_NoiseScheduleConfig):
    """Settings of :class:`DPMSolverMultistepScheduler`; names and defaults are diffusers'."""

    timestep_spacing: TimestepSpacing = "linspace"
    solver_order: Literal[1, 2] = 2
    algorithm_type: Literal["dpmsolver++"] = "dpmsolver++"
    solver_type: Literal["midpoint"] = "midpoint"
    lower_order_final: bool = True
    euler_at_final: bool = False
    final_sigmas_type: Literal["zero", "sigma_min"] = "zero"
    lambda_min_clipped: float = -math.inf
    variance_type: Literal[None] = None
    use_karras_sigmas: Off = False
    use_exponential_sigmas: Off = False
    use_beta_sigmas: Off = False
    use_lu_lambdas: Off = False
    use_flow_sigmas: Off = False
    use_dynamic_shifting: Off = False


def _float32_linspace(start: float, end: float, steps: int) -> np.ndarray:
    """``torch.linspace(..., dtype=float32)`` bit for bit: float32 step, fused multiply-add from both ends."""
    start32, end32 = _F32(start), _F32(end)
    if steps == 1:
        return np.array([start32])
    step = np.float64((end32 - start32) / _F32(steps - 1))
    i = np.arange(steps)
    # step * i is exact in float64; rounding the float64 sum to float32 then equals the FMA's single
    # rounding except for rare double-rounding ties
    from_start = np.float64(start32) + step * i
    from_end = np.float64(end32) - step * (steps - 1 - i)
    return np.where(i < steps // 2, from_start, from_end).astype(_F32)


def _betas(cfg: _NoiseScheduleConfig) -> np.ndarray:
    n = cfg.num_train_timesteps
    if cfg.trained_betas is not None:
        betas = np.asarray(cfg.trained_betas, dtype=_F32)
    elif cfg.beta_schedule == "linear":
        betas = _float32_linspace(cfg.beta_start, cfg.beta_end, n)
    elif cfg.beta_schedule == "scaled_linear":
        # latent-diffusion schedule: linear in sqrt(beta)
        betas = _float32_linspace(cfg.beta_start**0.5, cfg.beta_end**0.5, n) ** 2
    else:
        # squaredcos_cap_v2, Nichol & Dhariwal 2021 eq. 17: beta_t = 1 - abar(t+1)/abar(t), capped at 0.999
        def abar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = np.array([min(1 - abar((i + 1) / n) / abar(i / n), 0.999) for i in range(n)], dtype=_F32)
    if cfg.rescale_betas_zero_snr:
        betas = _rescale_zero_terminal_snr(betas)
    return betas


def _alphas_cumprod(betas: np.ndarray) -> np.ndarray:
    # torch's CPU cumprod accumulates float32 in double and rounds each partial product
    return np.cumprod((_F32(1.0) - betas).astype(np.float64)).astype(_F32)


def _rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Lin et al. 2023 (arXiv 2305.08891), Algorithm 1: shift and scale sqrt(abar) so that abar_T = 0."""
    sqrt_abar = _sqrt(_alphas_cumprod(betas))
    first, last = sqrt_abar[0], sqrt_abar[-1]
    sqrt_abar = (sqrt_abar - last) * (first / (first - last))
    abar = sqrt_abar * sqrt_abar
    alphas = np.concatenate([abar[:1], abar[1:] / abar[:-1]])
    return _F32(1.0) - alphas


class _Scheduler:
    """Shared state and helpers; subclasses set ``config_class`` and implement ``set_timesteps``/``step``."""

    config_class: type[_NoiseScheduleConfig] = _NoiseScheduleConfig
    order = 1  # model evaluations per step, as diffusers reports it (multistep solvers reuse past outputs)
    init_noise_sigma = 1.0  # variance-preserving: x_T ~ N(0, I)

    def __init__(self, config: _NoiseScheduleConfig | None = None, **settings: Any) -> None:
        """Build from a config object and/or keyword settings (the config's field names; they override it).

        Raises:
            SchedulerConfigError: an option is invalid or not implemented here.
        """
        if config is None:
            config = self.config_class()
        if not isinstance(config, self.config_class):
            raise SchedulerConfigError(f"{type(self).__name__} needs a {self.config_class.__name__}")
        unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(self.config_class)})
        if unknown:
            raise SchedulerConfigError(f"unknown {type(self).__name__} settings: {', '.join(unknown)}")
        self.config = dataclasses.replace(config, **settings)
        self.betas = _betas(self.config)
        self.alphas_cumprod = _alphas_cumprod(self.betas)
        self.num_inference_steps: int | None = None
        self._timesteps = np.zeros(0, dtype=np.int64)

    @classmethod
    def from_config(cls, config: dict[str, Any], **overrides: Any) -> _Scheduler:
        """Build from a diffusers scheduler config dict, resolved as diffusers' ``from_config`` resolves it.

        diffusers (``ConfigMixin.extract_init_dict``) passes the target class's ``__init__`` only the keys
        it names, minus private keys and minus the keys listed in ``_use_default_values`` (those the source
        scheduler took from its own class's defaults); every other argument takes the target class's
        default. Our config fields are a subset of the target's ``__init__`` arguments with the same
        defaults, so keeping the fields that survive that filter gives diffusers' values.
        """
        used_defaults = set(config.get(USE_DEFAULT_VALUES) or ())
        names = {f.name for f in dataclasses.fields(cls.config_class)}
        settings = {k: v for k, v in config.items() if k in names and k not in used_defaults}
        return cls(cls.config_class(**{**settings, **overrides}))

    @property
    def timesteps(self) -> np.ndarray:
        """The int64 timesteps of the denoising loop, set by ``set_timesteps`` (empty before)."""
        return self._timesteps

    def scale_model_input(self, sample: np.ndarray, timestep: int | None = None) -> np.ndarray:
        """Identity: variance-preserving schedulers feed the sample to the model unscaled."""
        return sample

    def _check_num_steps(self, num_inference_steps: int) -> None:
        if not 1 <= num_inference_steps <= self.config.num_train_timesteps:
            raise SchedulerConfigError(
                f"num_inference_steps must be in 1..{self.config.num_train_timesteps} "
                f"(num_train_timesteps), got {num_inference_steps}"
            )

    def _timesteps_for(self, num_inference_steps: int) -> np.ndarray:
        raise NotImplementedError

    def _usable(self, timesteps: np.ndarray) -> bool:
        # a usable schedule walks down strictly inside the training steps: a repeated timestep makes a zero
        # step (DPM-Solver++ divides by it), one past the end indexes outside the noise schedule
        n_train = self.config.num_train_timesteps
        return bool(len(timesteps)) and 0 <= int(timesteps.min()) and int(timesteps.max()) < n_train \
            and bool(np.all(np.diff(timesteps) < 0))

    def max_steps(self) -> int:
        """The most inference steps this scheduler's configuration gives a usable schedule for."""
        n_train = self.config.num_train_timesteps
        return next((n for n in range(n_train, 0, -1) if self._usable(self._timesteps_for(n))), 0)

    def _checked_timesteps(self, num_inference_steps: int) -> np.ndarray:
        self._check_num_steps(num_inference_steps)
        timesteps = self._timesteps_for(num_inference_steps)
        if not self._usable(timesteps):
            raise SchedulerConfigError(
                f"{num_inference_steps} steps is more than {type(self).__name__} supports with this configuration "
                f"(its timesteps would repeat or leave the training range); use at most {self.max_steps()}"
            )
        return timesteps

    def _check_ready(self) -> None:
        if self.num_inference_steps is None:
            raise SchedulerConfigError(f"call {type(self).__name__}.set_timesteps before step")


class DDIMScheduler(_Scheduler):
    """Denoising diffusion implicit models (Song et al. 2021, arXiv 2010.02502), as diffusers' DDIMScheduler.

    ``eta = 0`` is the deterministic DDIM sampler; ``eta = 1`` is DDPM-like ancestral sampling.
    """

    config_class = DDIMSchedulerConfig
    config: DDIMSchedulerConfig

    def __init__(self, config: DDIMSchedulerConfig | None = None, **settings: Any) -> None:
        super().__init__(config, **settings)
        # abar before the first training step: 1 (clean data) or, as trained, abar_0
        self.final_alpha_cumprod = _F32(1.0) if self.config.set_alpha_to_one else self.alphas_cumprod[0]

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Choose ``num_inference_steps`` timesteps by ``config.timestep_spacing`` (Lin et al. 2023, Table 2).

        Raises:
            SchedulerConfigError: ``num_inference_steps`` is not in ``1..num_train_timesteps``, or more than
                the configuration gives a usable schedule for (``max_steps``).
        """
        timesteps = self._checked_timesteps(num_inference_steps)
        self.num_inference_steps = num_inference_steps
        self._timesteps = np.ascontiguousarray(timesteps)

    def _timesteps_for(self, num_inference_steps: int) -> np.ndarray:
        cfg, n = self.config, num_inference_steps
        if cfg.timestep_spacing == "linspace":
            return np.linspace(0, cfg.num_train_timesteps - 1, n).round()[::-1].astype(np.int64)
        if cfg.timestep_spacing == "leading":
            stride = cfg.num_train_timesteps // n
            return (np.arange(n) * stride)[::-1].astype(np.int64) + cfg.steps_offset
        ratio = cfg.num_train_timesteps / n
        return np.round(np.arange(cfg.num_train_timesteps, 0, -ratio)).astype(np.int64) - 1

    def step(
        self,
        model_output: np.ndarray,
        timestep: int,
        sample: np.ndarray,
        eta: float = 0.0,
        use_clipped_model_output: bool = False,
        generator: np.random.Generator | None = None,
        variance_noise: np.ndarray | None = None,
    ) -> SchedulerOutput:
        """One DDIM update ``x_t -> x_{t-1}`` (Song et al. eq. 12), from the model output at ``timestep``.

        Args:
            eta: weight of the fresh noise (eq. 16); 0 is deterministic.
            use_clipped_model_output: recompute epsilon from the clipped ``x_0``.
            generator: numpy generator for the noise when ``eta > 0`` (unseeded if omitted).
            variance_noise: the noise itself, instead of ``generator``.

        Raises:
            SchedulerConfigError: ``set_timesteps`` was not called, or both noise sources were given.
        """
        self._check_ready()
        cfg, t = self.config, int(timestep)
        # 1. previous timestep: diffusers always strides by num_train_timesteps // num_inference_steps
        prev_t = t - cfg.num_train_timesteps // self.num_inference_steps
        # 2. abar_t and abar_{t-1} (the paper's alpha_t, alpha_{t-1})
        alpha_prod_t = self.alphas_cumprod[t]
        alpha_prod_t_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.final_alpha_cumprod
        beta_prod_t = _ONE - alpha_prod_t
        # 3. "predicted x_0" and epsilon, from whichever one the model parameterises
        x0, pred_epsilon = self._x0_and_epsilon(model_output, sample, alpha_prod_t, beta_prod_t)
        # 4. optional clipping of x_0 to the data range
        if cfg.clip_sample:
            x0 = np.clip(x0, -cfg.clip_sample_range, cfg.clip_sample_range)
        # 5. sigma_t(eta), eq. 16: eta * sqrt((1 - abar_{t-1}) / (1 - abar_t)) * sqrt(1 - abar_t / abar_{t-1})
        variance = ((_ONE - alpha_prod_t_prev) / beta_prod_t) * (_ONE - alpha_prod_t / alpha_prod_t_prev)
        std_dev_t = _F32(eta) * _sqrt(variance)
        if use_clipped_model_output:
            pred_epsilon = (sample - _sqrt(alpha_prod_t) * x0) / _sqrt(beta_prod_t)
        # 6. "direction pointing to x_t", eq. 12: sqrt(1 - abar_{t-1} - sigma_t^2) * epsilon
        pred_sample_direction = _sqrt(_ONE - alpha_prod_t_prev - std_dev_t * std_dev_t) * pred_epsilon
        # 7. x_{t-1} = sqrt(abar_{t-1}) * x_0 + direction + sigma_t * z, eq. 12
        prev_sample = _sqrt(alpha_prod_t_prev) * x0 + pred_sample_direction
        if eta > 0:
            prev_sample = prev_sample + std_dev_t * self._noise(model_output, generator, variance_noise)
        dtype = np.asarray(sample).dtype
        return SchedulerOutput(prev_sample.astype(dtype, copy=False), x0.astype(dtype, copy=False))

    def _x0_and_epsilon(
        self, model_output: np.ndarray, sample: np.ndarray, alpha_prod_t: np.float32, beta_prod_t: np.float32
    ) -> tuple[np.ndarray, np.ndarray]:
        # x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps; v = sqrt(abar) eps - sqrt(1 - abar) x_0 (Salimans & Ho)
        sqrt_a, sqrt_b = _sqrt(alpha_prod_t), _sqrt(beta_prod_t)
        if self.config.prediction_type == "epsilon":
            return (sample - sqrt_b * model_output) / sqrt_a, model_output
        if self.config.prediction_type == "sample":
            return model_output, (sample - sqrt_a * model_output) / sqrt_b
        return sqrt_a * sample - sqrt_b * model_output, sqrt_a * model_output + sqrt_b * sample

    @staticmethod
    def _noise(
        model_output: np.ndarray, generator: np.random.Generator | None, variance_noise: np.ndarray | None
    ) -> np.ndarray:
        if variance_noise is not None:
            if generator is not None:
                raise SchedulerConfigError("pass generator or variance_noise to DDIMScheduler.step, not both")
            return variance_noise
        rng = generator if generator is not None else np.random.default_rng()
        return rng.standard_normal(np.shape(model_output), dtype=_F32).astype(model_output.dtype, copy=False)


class DPMSolverMultistepScheduler(_Scheduler):
    """DPM-Solver++(2M) (Lu et al. 2022, arXiv 2211.01095), as diffusers' DPMSolverMultistepScheduler.

    Only ``algorithm_type="dpmsolver++"`` with the data-prediction ODE, solver orders 1 and 2 (midpoint form).
    """

    config_class = DPMSolverMultistepSchedulerConfig
    config: DPMSolverMultistepSchedulerConfig

    def __init__(self, config: DPMSolverMultistepSchedulerConfig | None = None, **settings: Any) -> None:
        super().__init__(config, **settings)
        if self.config.rescale_betas_zero_snr:
            self.alphas_cumprod[-1] = 2.0**-24  # as diffusers: keeps the first sigma finite
        alpha_t, sigma_t = _sqrt(self.alphas_cumprod), _sqrt(_ONE - self.alphas_cumprod)
        # lambda_t = log(alpha_t / sigma_t), the half log-SNR the solver steps in
        self._lambda_t = _log(alpha_t) - _log(sigma_t)
        self.sigmas = np.zeros(0, dtype=_F32)
        self._reset_solver_state()

    def _reset_solver_state(self) -> None:
        self._model_outputs: list[np.ndarray | None] = [None] * self.config.solver_order
        self._lower_order_nums = 0
        self._step_index: int | None = None
        self._begin_index: int | None = None

    @property
    def step_index(self) -> int | None:
        """Index of the next step in ``timesteps`` (None until the first ``step``)."""
        return self._step_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Start at ``timesteps[begin_index]`` instead of looking the first timestep up."""
        self._begin_index = begin_index

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Choose the timesteps and their sigmas ``sqrt((1 - abar) / abar)``, plus a final sigma.

        Raises:
            SchedulerConfigError: ``num_inference_steps`` is not in ``1..num_train_timesteps``, or more than
                the configuration gives a usable schedule for (``max_steps``).
        """
        timesteps = self._checked_timesteps(num_inference_steps)
        cfg = self.config
        sigmas = _sqrt((_ONE - self.alphas_cumprod) / self.alphas_cumprod)
        sigma_last = sigmas[0] if cfg.final_sigmas_type == "sigma_min" else _F32(0.0)
        self.sigmas = np.concatenate([sigmas[timesteps], [sigma_last]]).astype(_F32)
        self._timesteps = np.ascontiguousarray(timesteps)
        self.num_inference_steps = len(timesteps)
        self._reset_solver_state()

    def _timesteps_for(self, num_inference_steps: int) -> np.ndarray:
        cfg, n = self.config, num_inference_steps
        # drop the tail where lambda < lambda_min_clipped (matters for the cosine schedule)
        last = cfg.num_train_timesteps - int(np.searchsorted(self._lambda_t[::-1], cfg.lambda_min_clipped))
        if cfg.timestep_spacing == "linspace":
            return np.linspace(0, last - 1, n + 1).round()[::-1][:-1].astype(np.int64)
        if cfg.timestep_spacing == "leading":
            stride = last // (n + 1)
            return (np.arange(n + 1) * stride)[::-1][:-1].astype(np.int64) + cfg.steps_offset
        ratio = cfg.num_train_timesteps / n
        return np.arange(last, 0, -ratio).round().astype(np.int64) - 1

    def step(self, model_output: np.ndarray, timestep: int, sample: np.ndarray) -> SchedulerOutput:
        """One multistep DPM-Solver++ update from ``sigmas[i]`` to ``sigmas[i + 1]``, ``i`` the step index.

        Raises:
            SchedulerConfigError: ``set_timesteps`` was not called.
        """
        self._check_ready()
        if self._step_index is None:
            begin = self._begin_index
            self._step_index = begin if begin is not None else self._index_of(timestep)
        cfg, i, n = self.config, self._step_index, len(self._timesteps)
        # 1. data prediction x_theta(x_s, s): DPM-Solver++ integrates the x_0 model, not the noise model
        x0_pred = self._data_prediction(model_output, sample)
        self._model_outputs = [*self._model_outputs[1:], x0_pred]
        # 2. first order on the first step (no history) and on the last one when asked: fewer steps are
        #    more stable at low order, and a final sigma of 0 makes the step exactly x_0
        final_first_order = i == n - 1 and (
            cfg.euler_at_final or (cfg.lower_order_final and n < 15) or cfg.final_sigmas_type == "zero"
        )
        sample32 = np.asarray(sample, dtype=_F32)  # diffusers upcasts the sample for the update
        if cfg.solver_order == 1 or self._lower_order_nums < 1 or final_first_order:
            prev_sample = self._first_order_update(x0_pred, sample32)
        else:
            prev_sample = self._second_order_update(sample32)
        self._lower_order_nums = min(self._lower_order_nums + 1, cfg.solver_order)
        self._step_index += 1
        return SchedulerOutput(prev_sample.astype(x0_pred.dtype, copy=False), x0_pred)

    def _index_of(self, timestep: int) -> int:
        # as diffusers: the second match if a timestep repeats, the last step if it is not in the schedule
        matches = np.flatnonzero(self._timesteps == int(timestep))
        if len(matches) == 0:
            return len(self._timesteps) - 1
        return int(matches[1] if len(matches) > 1 else matches[0])

    def _alpha_sigma_lambda(self, index: int) -> tuple[np.float32, np.float32, np.float32]:
        # VP schedule: sigma here is sigma_t / alpha_t, so alpha_t = 1 / sqrt(1 + sigma^2)
        sigma = self.sigmas[index]
        alpha_t = _F32(1.0) / _sqrt(sigma * sigma + _F32(1.0))
        sigma_t = sigma * alpha_t
        return alpha_t, sigma_t, _log(alpha_t) - _log(sigma_t)

    def _data_prediction(self, model_output: np.ndarray, sample: np.ndarray) -> np.ndarray:
        if self.config.prediction_type == "sample":
            return model_output
        alpha_t, sigma_t, _ = self._alpha_sigma_lambda(self._step_index)
        if self.config.prediction_type == "epsilon":
            return (sample - sigma_t * model_output) / alpha_t
        return alpha_t * sample - sigma_t * model_output  # v-prediction

    def _first_order_update(self, x0_pred: np.ndarray, sample: np.ndarray) -> np.ndarray:
        """DPM-Solver++(1), = DDIM: x_t = sigma_t / sigma_s x_s - alpha_t (e^-h - 1) x_theta(x_s, s)."""
        alpha_t, sigma_t, lambda_t = self._alpha_sigma_lambda(self._step_index + 1)
        _, sigma_s, lambda_s = self._alpha_sigma_lambda(self._step_index)
        h = lambda_t - lambda_s
        return (sigma_t / sigma_s) * sample - (alpha_t * (_exp(-h) - _F32(1.0))) * x0_pred

    def _second_order_update(self, sample: np.ndarray) -> np.ndarray:
        """DPM-Solver++(2M), paper Algorithm 2: D = m0 + (m0 - m1) / (2 r0), r0 = h_{i-1} / h_i."""
        alpha_t, sigma_t, lambda_t = self._alpha_sigma_lambda(self._step_index + 1)
        _, sigma_s0, lambda_s0 = self._alpha_sigma_lambda(self._step_index)
        _, _, lambda_s1 = self._alpha_sigma_lambda(self._step_index - 1)
        m0, m1 = self._model_outputs[-1], self._model_outputs[-2]
        h, h_0 = lambda_t - lambda_s0, lambda_s0 - lambda_s1
        r0 = h_0 / h
        D0, D1 = m0, (_F32(1.0) / r0) * (m0 - m1)
        coef = alpha_t * (_exp(-h) - _F32(1.0))
        # the "midpoint" form: -alpha_t (e^-h - 1) (D0 + D1 / 2), grouped as diffusers groups it
        return (sigma_t / sigma_s0) * sample - coef * D0 - (_F32(0.5) * coef) * D1


_BY_CLASS_NAME: dict[str, type[_Scheduler]] = {
    "DDIMScheduler": DDIMScheduler,
    "DPMSolverMultistepScheduler": DPMSolverMultistepScheduler,
}
_BY_KIND: dict[str, type[_Scheduler]] = {"ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler}


def scheduler_from_config(
    config: dict[str, Any], kind: SchedulerName | None = None
) -> DDIMScheduler | DPMSolverMultistepScheduler:
    """Build a numpy scheduler from a diffusers scheduler config dict (``scheduler_config.json``).

    Exactly like diffusers' ``<Scheduler>.from_config(config)``, which is the reference: keys the target
    does not know (``_class_name``, ``_diffusers_version``, another scheduler's options) are ignored, and
    missing keys and the keys listed in ``_use_default_values`` take the target scheduler's defaults. So a
    DDIM config converted to DPM-Solver++ gets DPM's ``timestep_spacing="linspace"`` unless the DDIM
    config set ``timestep_spacing`` itself. A config without ``_use_default_values`` is taken as all
    explicit (diffusers' ``save_config`` drops the list: see ``converts_config``).

    Args:
        config: the config dict.
        kind: ``"ddim"`` or ``"dpm"``; default: the scheduler named by ``config["_class_name"]``.

    Raises:
        SchedulerConfigError: unknown kind or class name, or an option the numpy runtime does not implement.
    """
    if kind is not None:
        if kind not in _BY_KIND:
            raise SchedulerConfigError(f"unknown scheduler kind {kind!r}; choices: {', '.join(_BY_KIND)}")
        cls = _BY_KIND[kind]
    else:
        name = config.get("_class_name")
        if name not in _BY_CLASS_NAME:
            raise SchedulerConfigError(
                f"scheduler config names _class_name={name!r}; the numpy runtime implements "
                f"{', '.join(_BY_CLASS_NAME)} (or pass kind='ddim' / 'dpm' to convert)"
            )
        cls = _BY_CLASS_NAME[name]
    return cls.from_config(config)


def converts_config(config: dict[str, Any], kind: str) -> bool:
    """Whether building ``kind`` from ``config`` converts it to another scheduler class than its
    ``_class_name``: then which keys diffusers took from defaults (``_use_default_values``) matters."""
    cls = _BY_KIND.get(kind)
    return cls is not None and cls.__name__ != config.get("_class_name")
