"""The numpy schedulers against diffusers' own (torch, float32), over whole denoising loops."""

from __future__ import annotations

import re

import numpy as np
import pytest

from litefocus_export.core.errors import UsageError
from litefocus_export.runtime import schedulers
from litefocus_export.runtime.schedulers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    SchedulerConfigError,
    scheduler_from_config,
)

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

# diffusers' DPM scheduler calls np.array on a torch tensor, which numpy 2 flags; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

# cvssp/audioldm2 scheduler/scheduler_config.json (hub revision c8e7e189), verbatim
AUDIOLDM2_SCHEDULER_CONFIG = {
    "_class_name": "DDIMScheduler",
    "_diffusers_version": "0.20.0.dev0",
    "beta_end": 0.0195,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.0015,
    "clip_sample": False,
    "clip_sample_range": 1.0,
    "dynamic_thresholding_ratio": 0.995,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "rescale_betas_zero_snr": False,
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "thresholding": False,
    "timestep_spacing": "leading",
    "trained_betas": None,
}
DIFFUSERS_CLASS = {"ddim": "DDIMScheduler", "dpm": "DPMSolverMultistepScheduler"}
LATENT_SHAPE = (2, 8, 16, 16)  # batch, AudioLDM2 latent channels, a short time x frequency grid

# Up to 10 steps the loops agree to 1e-6 relative. Longer loops drift further apart, to ~2.5e-6 at 50 steps
# and ~4.5e-6 at 200: torch's CPU sqrt/log/exp are not correctly rounded (sqrt is an ulp off for ~20% of
# float32 inputs on this build), ours are, so a few coefficients per step differ by an ulp and the loop
# carries that along. A 1-ulp change of the initial noise alone moves diffusers' own result by 5e-7..1.3e-6.
# test_bit_exact_with_torch_rounding shows that those ulps are the only difference.
RTOL = 1e-6
RTOL_LONG_LOOP = 5e-6


def audioldm2(**options) -> dict:
    """The AudioLDM2 scheduler config with some options changed."""
    return {**AUDIOLDM2_SCHEDULER_CONFIG, **options}


ZERO_SNR = {"rescale_betas_zero_snr": True, "prediction_type": "v_prediction", "timestep_spacing": "trailing"}
COSINE = {"beta_schedule": "squaredcos_cap_v2", "lambda_min_clipped": -5.1, "timestep_spacing": "trailing"}


def fake_unet(sample: np.ndarray, t: int) -> np.ndarray:
    """A deterministic stand-in for the UNet: a smooth function of the sample plus a field seeded by t."""
    field = np.random.default_rng(int(t)).standard_normal(sample.shape, dtype=np.float32)
    return (np.float32(0.6) * np.tanh(sample) + np.float32(0.8) * field).astype(np.float32)


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def diffusers_scheduler(kind: str, config: dict):
    return getattr(diffusers, DIFFUSERS_CLASS[kind]).from_config(config)


def run_diffusers(scheduler, steps: int, x_T: np.ndarray, noises: list | None = None):
    """Denoise with a diffusers scheduler; returns timesteps, the final sample and every x_0 estimate."""
    scheduler.set_timesteps(steps)
    sample, x0s = torch.from_numpy(x_T.copy()), []
    for i, t in enumerate(scheduler.timesteps):
        model_output = torch.from_numpy(fake_unet(sample.numpy(), int(t)))
        kwargs = {} if noises is None else {"eta": 1.0, "variance_noise": torch.from_numpy(noises[i])}
        out = scheduler.step(model_output, t, sample, **kwargs)
        sample = out.prev_sample
        x0 = out.pred_original_sample if hasattr(out, "pred_original_sample") else scheduler.model_outputs[-1]
        x0s.append(x0.numpy().copy())
    return scheduler.timesteps.numpy(), sample.numpy(), x0s


def run_ours(scheduler, steps: int, x_T: np.ndarray, noises: list | None = None):
    scheduler.set_timesteps(steps)
    sample, x0s = x_T.copy(), []
    for i, t in enumerate(scheduler.timesteps):
        kwargs = {} if noises is None else {"eta": 1.0, "variance_noise": noises[i]}
        out = scheduler.step(fake_unet(sample, t), t, sample, **kwargs)
        assert out.prev_sample.dtype == np.float32 and out.pred_original_sample.dtype == np.float32
        sample = out.prev_sample
        x0s.append(out.pred_original_sample)
    return scheduler.timesteps, sample, x0s


def assert_loops_match(kind: str, config: dict, steps: int, rtol: float, noises: list | None = None) -> None:
    x_T = np.random.default_rng(0).standard_normal(LATENT_SHAPE, dtype=np.float32)
    ref_t, ref_x, ref_x0s = run_diffusers(diffusers_scheduler(kind, config), steps, x_T, noises)
    our_t, our_x, our_x0s = run_ours(scheduler_from_config(config, kind), steps, x_T, noises)
    assert our_t.dtype == np.int64
    np.testing.assert_array_equal(our_t, ref_t)
    assert np.isfinite(ref_x).all()
    assert relative_error(our_x, ref_x) <= rtol, relative_error(our_x, ref_x)
    x0_errors = [relative_error(ours, ref) for ours, ref in zip(our_x0s, ref_x0s, strict=True)]
    assert max(x0_errors) <= rtol, x0_errors


def torch_elementary(fn):
    def apply(x):
        return fn(torch.from_numpy(np.array(x, dtype=np.float32, ndmin=1))).numpy().reshape(np.shape(x))[()]

    return apply


@pytest.fixture
def torch_rounding(monkeypatch):
    """Make our sqrt/log/exp round exactly like torch's CPU kernels."""
    for name, fn in (("_sqrt", torch.sqrt), ("_log", torch.log), ("_exp", torch.exp)):
        monkeypatch.setattr(schedulers, name, torch_elementary(fn))


class TestLoopParity:
    @pytest.mark.parametrize("steps", [1, 3, 10, 50])
    @pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
    @pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
    @pytest.mark.parametrize("kind", ["ddim", "dpm"])
    def test_audioldm2_config(self, kind, prediction_type, spacing, steps):
        config = audioldm2(prediction_type=prediction_type, timestep_spacing=spacing)
        assert_loops_match(kind, config, steps, RTOL if steps <= 10 else RTOL_LONG_LOOP)

    @pytest.mark.parametrize("steps", [10, 200])
    @pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
    @pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
    @pytest.mark.parametrize("kind", ["ddim", "dpm"])
    def test_bit_exact_with_torch_rounding(self, torch_rounding, kind, prediction_type, spacing, steps):
        config = audioldm2(prediction_type=prediction_type, timestep_spacing=spacing)
        assert_loops_match(kind, config, steps, rtol=0.0)

    @pytest.mark.parametrize(
        ("kind", "options"),
        [
            ("ddim", {"prediction_type": "sample"}),
            ("ddim", {"clip_sample": True, "clip_sample_range": 0.5}),
            ("ddim", {"set_alpha_to_one": True, "timestep_spacing": "linspace"}),
            ("ddim", {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02}),
            ("ddim", {"beta_schedule": "squaredcos_cap_v2", "steps_offset": 0}),
            ("ddim", {"trained_betas": np.linspace(0.001, 0.03, 1000).tolist()}),
            ("ddim", ZERO_SNR),
            ("dpm", {"solver_order": 1}),
            ("dpm", {"final_sigmas_type": "sigma_min"}),
            ("dpm", {"final_sigmas_type": "sigma_min", "lower_order_final": False}),
            ("dpm", {"final_sigmas_type": "sigma_min", "euler_at_final": True}),
            ("dpm", COSINE),
            ("dpm", ZERO_SNR),
        ],
    )
    @pytest.mark.parametrize("steps", [4, 10, 25])
    def test_options(self, torch_rounding, kind, options, steps):
        assert_loops_match(kind, audioldm2(**options), steps, rtol=0.0)

    def test_ddim_eta_with_given_noise(self):
        assert_loops_match("ddim", AUDIOLDM2_SCHEDULER_CONFIG, 10, RTOL, noises=self.noises(10))

    def test_ddim_eta_with_clipping(self, torch_rounding):
        # bit-exact only: an ulp of the unclipped x_0 (up to ~70) is large next to the clip range
        config = audioldm2(clip_sample=True, clip_sample_range=0.5)
        assert_loops_match("ddim", config, 10, rtol=0.0, noises=self.noises(10))

    @staticmethod
    def noises(steps: int) -> list[np.ndarray]:
        rng = np.random.default_rng(1)
        return [rng.standard_normal(LATENT_SHAPE, dtype=np.float32) for _ in range(steps)]


class TestDDIMNoise:
    def test_generator_is_reproducible(self):
        scheduler = DDIMScheduler.from_config(AUDIOLDM2_SCHEDULER_CONFIG)
        scheduler.set_timesteps(5)
        x = np.ones(LATENT_SHAPE, dtype=np.float32)
        t = scheduler.timesteps[0]
        a, b = (
            scheduler.step(x, t, x, eta=1.0, generator=np.random.default_rng(7)).prev_sample for _ in range(2)
        )
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, scheduler.step(x, t, x).prev_sample)

    def test_generator_and_noise_together_is_an_error(self):
        scheduler = DDIMScheduler.from_config(AUDIOLDM2_SCHEDULER_CONFIG)
        scheduler.set_timesteps(5)
        x = np.ones(LATENT_SHAPE, dtype=np.float32)
        with pytest.raises(SchedulerConfigError, match="not both"):
            scheduler.step(x, 981, x, eta=1.0, generator=np.random.default_rng(0), variance_noise=x)


class TestFromConfig:
    @pytest.mark.parametrize("kind", ["ddim", "dpm"])
    def test_round_trip_from_diffusers_config(self, kind):
        reference = diffusers_scheduler(kind, AUDIOLDM2_SCHEDULER_CONFIG)
        ours = scheduler_from_config(dict(reference.config))  # kind from _class_name
        assert type(ours).__name__ == DIFFUSERS_CLASS[kind]
        for name, value in vars(ours.config).items():
            assert value == reference.config[name], name
        # torch.linspace uses fused multiply-adds; allow an ulp for a build that does not
        np.testing.assert_array_max_ulp(ours.alphas_cumprod, reference.alphas_cumprod.numpy(), maxulp=1)

    def test_converting_ddim_to_dpm_like_diffusers(self):
        reference = diffusers.DPMSolverMultistepScheduler.from_config(AUDIOLDM2_SCHEDULER_CONFIG)
        ours = scheduler_from_config(AUDIOLDM2_SCHEDULER_CONFIG, kind="dpm")
        assert isinstance(ours, DPMSolverMultistepScheduler)
        assert ours.config.timestep_spacing == "leading" and ours.config.steps_offset == 1
        for name, value in vars(ours.config).items():
            assert value == reference.config[name], name

    def test_keys_diffusers_defaulted_are_defaulted_again(self):
        # a config loaded by diffusers lists the keys it filled in; converting re-defaults them
        ddim = diffusers.DDIMScheduler.from_config({"beta_schedule": "scaled_linear", "steps_offset": 1})
        reference = diffusers.DPMSolverMultistepScheduler.from_config(ddim.config)
        ours = scheduler_from_config(dict(ddim.config), kind="dpm")
        assert ours.config.timestep_spacing == reference.config.timestep_spacing == "linspace"
        assert ours.config.beta_schedule == "scaled_linear" and ours.config.steps_offset == 1

    @pytest.mark.parametrize("kind", ["ddim", "dpm"])
    def test_missing_keys_take_diffusers_defaults(self, kind):
        reference = getattr(diffusers, DIFFUSERS_CLASS[kind])()
        ours = scheduler_from_config({"_class_name": DIFFUSERS_CLASS[kind]})
        for name, value in vars(ours.config).items():
            assert value == reference.config[name], name

    def test_constructor_takes_settings(self):
        scheduler = DPMSolverMultistepScheduler(solver_order=1, prediction_type="v_prediction")
        assert scheduler.config.solver_order == 1 and scheduler.config.prediction_type == "v_prediction"
        scheduler.set_timesteps(4)
        assert scheduler.timesteps.dtype == np.int64 and len(scheduler.timesteps) == 4
        x = np.arange(6, dtype=np.float32)
        assert scheduler.scale_model_input(x, 3) is x
        assert scheduler.init_noise_sigma == 1.0 and scheduler.order == 1


def exported_config(scheduler, tmp_path) -> dict:
    """``scheduler_config.json`` as the export writes it for a pipeline holding ``scheduler``."""
    import json
    from types import SimpleNamespace

    from litefocus_export.export.stages import save_side_files

    save_side_files(SimpleNamespace(scheduler=scheduler), tmp_path)
    return json.loads((tmp_path / "scheduler_config.json").read_text())


def pytorch_path_scheduler(scheduler, kind: str):
    """The scheduler ``generate --backend torch --scheduler kind`` runs: ``use_scheduler`` on the pipeline's."""
    from types import SimpleNamespace

    from litefocus_export.pytorch import use_scheduler

    pipe = SimpleNamespace(scheduler=scheduler)
    use_scheduler(pipe, kind)
    return pipe.scheduler


def loaded(class_name: str, config: dict):
    """A scheduler as diffusers loads one (``from_config`` computes ``_use_default_values``)."""
    return getattr(diffusers, class_name).from_config(config)


# Scheduler configs as pipelines hold them: (source class, config dict, then the classes it was converted to)
SOURCES = {
    "tiny": ("DDIMScheduler", None, ()),  # None: the random:audioldm2-tiny builder's config (specs.SCHEDULER)
    "audioldm2": ("DDIMScheduler", AUDIOLDM2_SCHEDULER_CONFIG, ()),
    "ddim-all-defaults": ("DDIMScheduler", {}, ()),
    "ddim-explicit-leading": ("DDIMScheduler", {"timestep_spacing": "leading", "steps_offset": 1}, ()),
    "ddim-explicit-trailing-zero-snr": ("DDIMScheduler", {"timestep_spacing": "trailing", **ZERO_SNR}, ()),
    # keys only the source knows (solver_order, set_alpha_to_one) must not leak into the other class
    "dpm-own-keys": ("DPMSolverMultistepScheduler", {"solver_order": 1, "beta_schedule": "scaled_linear"}, ()),
    "ddim-own-keys": ("DDIMScheduler", {"set_alpha_to_one": False, "clip_sample": False}, ()),
    # a pipeline whose scheduler was swapped before the export, and swapped back
    "tiny-swapped-to-dpm": ("DDIMScheduler", None, ("DPMSolverMultistepScheduler",)),
    "tiny-swapped-and-back": ("DDIMScheduler", None, ("DPMSolverMultistepScheduler", "DDIMScheduler")),
    # a third class: both kinds convert; PNDM's set_alpha_to_one default (False) is not DDIM's (True)
    "pndm": ("PNDMScheduler", {"beta_schedule": "scaled_linear", "skip_prk_steps": True}, ()),
}


def pipeline_scheduler(source: str):
    from litefocus_export.models.specs import SCHEDULER

    class_name, config, conversions = SOURCES[source]
    scheduler = loaded(class_name, SCHEDULER if config is None else config)
    for name in conversions:
        scheduler = loaded(name, scheduler.config)
    return scheduler


class TestPipelinePath:
    """The diffusers side built as ``generate --backend torch`` builds it (``from_config`` of the pipeline's
    scheduler config); ours from ``scheduler_config.json`` as the export writes it."""

    @pytest.mark.parametrize("source", list(SOURCES))
    @pytest.mark.parametrize("kind", ["ddim", "dpm"])
    def test_resolved_settings_and_timesteps_match(self, tmp_path, source, kind):
        scheduler = pipeline_scheduler(source)
        reference = pytorch_path_scheduler(scheduler, kind)
        ours = scheduler_from_config(exported_config(scheduler, tmp_path), kind)
        assert type(ours).__name__ == type(reference).__name__
        for name, value in vars(ours.config).items():
            assert value == reference.config[name], name
        for steps in (4, 10, 25):
            reference.set_timesteps(steps)
            ours.set_timesteps(steps)
            np.testing.assert_array_equal(ours.timesteps, reference.timesteps.numpy())

    @pytest.mark.parametrize("steps", [4, 10, 25])
    @pytest.mark.parametrize("kind", ["ddim", "dpm"])
    def test_tiny_pipeline_loops(self, tiny_pipeline_factory, tmp_path, kind, steps):
        scheduler = tiny_pipeline_factory().scheduler  # the real tiny pipeline's, with _use_default_values
        assert "timestep_spacing" in scheduler.config["_use_default_values"]
        config = exported_config(scheduler, tmp_path)
        # issue 16: DPM-Solver++ from this DDIM config takes DPM's own default spacing, as in diffusers
        expected_spacing = "leading" if kind == "ddim" else "linspace"
        assert scheduler_from_config(config, kind).config.timestep_spacing == expected_spacing
        assert_pipeline_loops_match(scheduler, config, kind, steps)

    @pytest.mark.parametrize("steps", [4, 10, 25])
    @pytest.mark.parametrize("kind", ["ddim", "dpm"])
    def test_audioldm2_checkpoint_loops(self, tmp_path, kind, steps):
        scheduler = diffusers.DDIMScheduler.from_config(AUDIOLDM2_SCHEDULER_CONFIG)  # as a hub load does
        config = exported_config(scheduler, tmp_path)
        assert config["_use_default_values"] == sorted(scheduler.config.get("_use_default_values", []))
        # every key is in the checkpoint's file, so DPM keeps its explicit "leading"
        assert scheduler_from_config(config, kind).config.timestep_spacing == "leading"
        assert_pipeline_loops_match(scheduler, config, kind, steps)

    def test_export_always_writes_the_list(self, tmp_path):
        # an empty list too: its absence marks a folder exported before it was kept (see the runtime check)
        scheduler = diffusers.DDIMScheduler.from_config(AUDIOLDM2_SCHEDULER_CONFIG)  # names every argument
        assert not scheduler.config.get("_use_default_values")
        assert exported_config(scheduler, tmp_path)["_use_default_values"] == []

    def test_diffusers_reads_the_exported_file_back_the_same(self, tmp_path):
        scheduler = pipeline_scheduler("tiny")
        exported_config(scheduler, tmp_path)
        again = diffusers.DDIMScheduler.from_pretrained(tmp_path)
        assert sorted(again.config["_use_default_values"]) == sorted(scheduler.config["_use_default_values"])
        dpm = diffusers.DPMSolverMultistepScheduler.from_config(again.config)
        assert dpm.config.timestep_spacing == "linspace"

    @pytest.mark.parametrize("kind", ["ddim", "dpm"])
    def test_fields_are_diffusers_arguments(self, kind):
        # from_config keeps only the target's __init__ arguments; ours must be a subset of them
        import dataclasses
        import inspect

        cls = getattr(diffusers, DIFFUSERS_CLASS[kind])
        arguments = inspect.signature(cls.__init__).parameters
        ours = scheduler_from_config({}, kind).config_class
        for f in dataclasses.fields(ours):
            assert f.name in arguments, f.name
            assert f.default == arguments[f.name].default, f.name


def assert_pipeline_loops_match(scheduler, config: dict, kind: str, steps: int) -> None:
    x_T = np.random.default_rng(0).standard_normal(LATENT_SHAPE, dtype=np.float32)
    ref_t, ref_x, ref_x0s = run_diffusers(pytorch_path_scheduler(scheduler, kind), steps, x_T)
    our_t, our_x, our_x0s = run_ours(scheduler_from_config(config, kind), steps, x_T)
    np.testing.assert_array_equal(our_t, ref_t)
    rtol = RTOL if steps <= 10 else RTOL_LONG_LOOP
    assert relative_error(our_x, ref_x) <= rtol, relative_error(our_x, ref_x)
    assert max(relative_error(o, r) for o, r in zip(our_x0s, ref_x0s, strict=True)) <= rtol


class TestErrors:
    @pytest.mark.parametrize(
        ("kind", "key", "value"),
        [
            ("ddim", "thresholding", True),
            ("ddim", "beta_schedule", "exponential"),
            ("ddim", "timestep_spacing", "karras"),
            ("ddim", "prediction_type", "flow_prediction"),
            ("dpm", "algorithm_type", "sde-dpmsolver++"),
            ("dpm", "solver_order", 3),
            ("dpm", "solver_type", "heun"),
            ("dpm", "use_karras_sigmas", True),
            ("dpm", "use_flow_sigmas", True),
            ("dpm", "variance_type", "learned_range"),
            ("dpm", "final_sigmas_type", "sigma_max"),
        ],
    )
    def test_unsupported_option(self, kind, key, value):
        message = re.escape(f"option {key}={value!r} is not supported") + ".*choices"
        with pytest.raises(SchedulerConfigError, match=message):
            scheduler_from_config(audioldm2(**{key: value}), kind=kind)

    def test_errors_are_value_and_usage_errors(self):
        assert issubclass(SchedulerConfigError, ValueError) and issubclass(SchedulerConfigError, UsageError)

    def test_unknown_class_name(self):
        with pytest.raises(SchedulerConfigError, match="'PNDMScheduler'.*implements DDIMScheduler, DPM"):
            scheduler_from_config({"_class_name": "PNDMScheduler"})

    def test_unknown_kind(self):
        with pytest.raises(SchedulerConfigError, match="kind 'euler'.*ddim, dpm"):
            scheduler_from_config(AUDIOLDM2_SCHEDULER_CONFIG, kind="euler")

    def test_unknown_setting(self):
        with pytest.raises(SchedulerConfigError, match="unknown DDIMScheduler settings: solver_order"):
            DDIMScheduler(solver_order=2)

    def test_trained_betas_length(self):
        with pytest.raises(SchedulerConfigError, match="trained_betas has 3 values"):
            DDIMScheduler(trained_betas=[0.1, 0.2, 0.3])

    @pytest.mark.parametrize("cls", [DDIMScheduler, DPMSolverMultistepScheduler])
    def test_step_before_set_timesteps(self, cls):
        x = np.zeros(4, dtype=np.float32)
        with pytest.raises(SchedulerConfigError, match="set_timesteps"):
            cls().step(x, 999, x)

    @pytest.mark.parametrize("cls", [DDIMScheduler, DPMSolverMultistepScheduler])
    @pytest.mark.parametrize("steps", [0, 1001])
    def test_bad_step_count(self, cls, steps):
        with pytest.raises(SchedulerConfigError, match=rf"1\.\.1000 .*got {steps}"):
            cls().set_timesteps(steps)
