"""The seams of the architecture: every name has one source, and the CLI offers exactly the registries' names."""

import re
import typing
from pathlib import Path

from polydiff.core import parameterization as P
from polydiff.core.base import PolydiffModule
from polydiff.core.cld import CLD_PROCESSES
from polydiff.core.cld_samplers import CLD_SAMPLERS
from polydiff.core.discrete.module import DiscreteDiffusionModule
from polydiff.core.discrete.sampling import SAMPLERS as CATEGORICAL_SAMPLERS
from polydiff.core.discrete.sampling import CategoricalSamplerConfig
from polydiff.core.grids import FINAL_STEPS, GRID_KINDS
from polydiff.core.module import DiffusionConfig, DiffusionModule
from polydiff.core.objective import WEIGHTINGS, ObjectiveConfig
from polydiff.core.processes import PROCESSES
from polydiff.core.samplers import SAMPLERS
from polydiff.core.sampling import SamplerConfig
from polydiff.core.trainer import PolydiffTrainer

ROOT = Path(__file__).resolve().parents[1]


def _choices(cls, field: str) -> tuple[str, ...]:
    return typing.get_args(typing.get_type_hints(cls)[field])


def test_config_choices_are_the_registries():
    assert _choices(SamplerConfig, "name") == tuple(SAMPLERS) + tuple(CLD_SAMPLERS)
    assert _choices(CategoricalSamplerConfig, "name") == tuple(CATEGORICAL_SAMPLERS)
    assert _choices(DiffusionConfig, "process") == tuple(PROCESSES) + tuple(CLD_PROCESSES)
    assert _choices(DiffusionConfig, "prediction") == tuple(P.PREDICTIONS)
    assert _choices(SamplerConfig, "grid") == GRID_KINDS
    assert _choices(SamplerConfig, "final_step") == FINAL_STEPS
    assert set(_choices(ObjectiveConfig, "weighting")) == set(WEIGHTINGS) == {"native", "min_snr", *P.PREDICTIONS}


def test_sample_subcommand_offers_every_sampler_and_is_typed_against_the_base():
    hints = typing.get_type_hints(PolydiffTrainer.sample)
    (literal, _none) = typing.get_args(hints["sampler"])
    assert typing.get_args(literal) == tuple(SAMPLERS) + tuple(CLD_SAMPLERS) + tuple(CATEGORICAL_SAMPLERS)
    assert hints["model"] is PolydiffModule
    assert DiffusionModule.sampler_names == tuple(SAMPLERS) + tuple(CLD_SAMPLERS)
    assert DiscreteDiffusionModule.sampler_names == tuple(CATEGORICAL_SAMPLERS)


def test_both_module_kinds_share_one_base_without_borrowed_methods():
    for kind in (DiffusionModule, DiscreteDiffusionModule):
        assert issubclass(kind, PolydiffModule)
        for name in ("configure_optimizers", "load_weights", "report_metrics", "resolve_sampler", "on_fit_start",
                     "on_save_checkpoint", "on_load_checkpoint", "connect_data", "write_samples"):
            assert getattr(kind, name) is getattr(PolydiffModule, name), f"{kind.__name__}.{name} is not the base's"
    source = (ROOT / "core" / "discrete" / "module.py").read_text()
    assert not re.search(r"^\s+\w+ = DiffusionModule\.\w+", source, re.M)


def test_every_prediction_target_round_trips_through_its_one_definition():
    import torch

    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    lam = torch.tensor([-6.0, -1.0, 2.0, 7.0], dtype=torch.float64)
    alpha, sigma = torch.sigmoid(lam).sqrt(), torch.sigmoid(-lam).sqrt()
    x_t = alpha[:, None] * x0 + sigma[:, None] * eps
    for name in P.PREDICTIONS:
        out = P.target(name, x0, eps, alpha, sigma, 0.5)
        torch.testing.assert_close(P.to_x0(name, out, x_t, alpha, sigma, 0.5), x0, rtol=1e-9, atol=1e-9)


def test_no_product_code_imports_benchmarks_or_probes_the_datamodule():
    for folder in ("core", "domains", "datasets"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            assert not re.search(r"^\s*(from|import)\s+benchmarks\b|_gmm|_libs", text, re.M), path
            assert "hasattr(dm" not in text and 'getattr(self.trainer, "datamodule"' not in text, path
