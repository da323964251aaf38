"""The LightningModule base of categorical (discrete) diffusion, the twin of :class:`polydiff.core.module.DiffusionModule`.

A domain subclasses :class:`DiscreteDiffusionModule`, builds its network, declares its categorical variables with
:meth:`~DiscreteDiffusionModule.set_variables` and implements :meth:`~DiscreteDiffusionModule.encode` (batch ->
:class:`CategoricalBatch`), :meth:`~DiscreteDiffusionModule.x0_logits` (the network call) and ``write_samples``.
Checkpoint tagging and checks, ``load_weights``, ``report_metrics``, the optimiser, ``connect_data`` and
``resolve_sampler`` come from the shared base :class:`polydiff.core.base.PolydiffModule`, so ``polydiff fit / test /
sample`` treat both kinds alike.
"""

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Optional, Sequence

import torch
from torch import Tensor, nn

from polydiff.core.base import PolydiffModule, TrainingConfig
from polydiff.core.discrete.objective import (
    CategoricalConfig,
    ce_term,
    check_config,
    draw_times,
    make_process,
    masked_sum,
    mdlm_term,
    prior_term,
    vb_term,
)
from polydiff.core.discrete.processes import CategoricalProcess
from polydiff.core.discrete.sampling import SAMPLERS, CategoricalSamplerConfig, sample_categorical_diffusion
from polydiff.core.utils import PolydiffError, sum_across_ranks


@dataclass
class CategoricalBatch:
    """What a domain hands to the categorical core for one batch.

    ``x0``: one long tensor ``[B, ...]`` per categorical variable (e.g. node types ``[B, N]`` and edge types
    ``[B, N, N]``). ``mask``: None, or per variable None / a ``[B, ...]`` tensor, 1 where the position exists and counts in
    the loss (padding 0). ``cond``: anything else the network takes.
    """

    x0: tuple[Tensor, ...]
    mask: Optional[tuple[Optional[Tensor], ...]] = None
    cond: Any = None

    def masks(self) -> tuple[Optional[Tensor], ...]:
        return self.mask if self.mask is not None else (None,) * len(self.x0)


torch.serialization.add_safe_globals([CategoricalConfig, CategoricalSamplerConfig])


class DiscreteDiffusionModule(PolydiffModule):
    """Shared training, bound evaluation, sampling and checkpoint logic for categorical diffusion (D3PM, MDLM).

    Args:
        diffusion: the categorical process (transition, schedule, steps T) and the loss.
        sampler: default sampler for ``polydiff test`` previews and ``polydiff sample``.
        training: optimiser settings and fine-tuning start point (shared with the Gaussian modules).
    """

    sampler_names: ClassVar[tuple[str, ...]] = tuple(SAMPLERS)

    def __init__(
        self,
        diffusion: CategoricalConfig = CategoricalConfig(),
        sampler: CategoricalSamplerConfig = CategoricalSamplerConfig(),
        training: TrainingConfig = TrainingConfig(),
    ) -> None:
        super().__init__(sampler, training)
        check_config(diffusion)
        if diffusion.steps > 0 and sampler.steps > diffusion.steps:
            raise PolydiffError(f"sampler.steps {sampler.steps} exceeds diffusion.steps {diffusion.steps}; lower it")
        self.diffusion_config = diffusion
        self.processes: tuple[CategoricalProcess, ...] = ()
        self.variable_weights: tuple[float, ...] = ()
        self.network: nn.Module | None = None
        self._test_totals: dict[str, float] = {}

    # ------------------------------------------------------------------ variables
    def set_variables(self, num_categories: Sequence[int], marginals: Optional[Sequence[Optional[Tensor]]] = None,
                      weights: Optional[Sequence[float]] = None) -> None:
        """Declare the categorical variables: their numbers of categories, their marginals and their loss weights.

        Marginals (category frequencies, transition "marginal" only) are stored as buffers ``marginals_i`` so
        checkpoints carry them; None leaves a uniform placeholder that a domain fills from its data before training
        (call ``set_variables`` again) and that loading a checkpoint overwrites. Weights scale each variable's loss
        (DiGress weighs edges by 5). Absorbing transitions use the *last* category of every variable as the absorbing
        ([MASK]) state: the domain's vocabulary must reserve it.
        """
        num_categories = [int(k) for k in num_categories]
        marginals = list(marginals) if marginals is not None else [None] * len(num_categories)
        if len(marginals) != len(num_categories):
            raise PolydiffError(f"{len(marginals)} marginals for {len(num_categories)} variables")
        if self.diffusion_config.transition == "marginal":
            for i, (k, m) in enumerate(zip(num_categories, marginals)):
                m = torch.full((k,), 1.0 / k, dtype=torch.float64) if m is None else torch.as_tensor(m).double()
                name = f"marginals_{i}"
                if name in dict(self.named_buffers()):
                    getattr(self, name).data = m.to(getattr(self, name).device)
                else:
                    self.register_buffer(name, m)
        self.variable_weights = tuple(float(w) for w in (weights or [1.0] * len(num_categories)))
        self._num_categories = tuple(num_categories)
        self._rebuild_processes()

    def _rebuild_processes(self) -> None:
        buffers = dict(self.named_buffers())
        self.processes = tuple(
            make_process(self.diffusion_config, k, buffers.get(f"marginals_{i}", None))
            for i, k in enumerate(getattr(self, "_num_categories", ())))

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """Load weights and buffers, then rebuild the processes (their marginals are buffers)."""
        out = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self._rebuild_processes()
        return out

    # ------------------------------------------------------------------ hooks for domains
    def encode(self, batch: Any) -> CategoricalBatch:
        """Turn a batch from the DataModule into categorical tensors."""
        raise NotImplementedError

    def x0_logits(self, xs: tuple[Tensor, ...], time: Tensor, cond: Any) -> tuple[Tensor, ...]:
        """The network's x0 logits ``[B, ..., K_i]`` per variable for noisy ``xs`` at ``time`` ``[B]`` in [0, 1]."""
        if self.network is None:
            raise PolydiffError(f"{type(self).__name__} did not build a network")
        return tuple(self.network(xs, time, cond))

    def constrain(self, xs: tuple[Tensor, ...], mask: tuple[Optional[Tensor], ...]) -> tuple[Tensor, ...]:
        """Make a noisy state valid for the domain (e.g. symmetric edge types, padding reset); identity by default."""
        return xs

    def select_condition(self, cond: Any, index: Tensor) -> Any:
        """The conditions of the items ``index`` of a batch (the fast sampler evaluates sub-batches)."""
        if cond is None:
            return None
        if isinstance(cond, Tensor):
            return cond[index.to(cond.device)]
        raise PolydiffError(f"{type(self).__name__}.select_condition must be overridden for conditions of type "
                            f"{type(cond).__name__}")

    def test_metrics(self) -> dict[str, float]:
        """Extra metrics of ``polydiff test`` besides the bound (e.g. sample statistics); called once per test run."""
        return {}

    # ------------------------------------------------------------------ training
    def _check_variables(self, b: CategoricalBatch) -> None:
        if len(self.processes) != len(b.x0):
            raise PolydiffError(f"{type(self).__name__}: the batch has {len(b.x0)} categorical variables but "
                                f"{len(self.processes)} were declared with set_variables")

    def diffusion_loss(self, b: CategoricalBatch, generator: torch.Generator | None = None
                       ) -> tuple[Tensor, Tensor]:
        """Per-item training loss ``[B]`` and per-item estimate of the bound in nats per position ``[B]``.

        hybrid: ``T * vb_k + ce_weight * CE`` at a stratified step ``k`` per item (D3PM eq. 5); mdlm: MDLM eq. 10.
        """
        self._check_variables(b)
        cfg = self.diffusion_config
        n, dev = b.x0[0].shape[0], b.x0[0].device
        t, s = draw_times(n, cfg.steps, generator)
        masks = b.masks()
        xt = tuple(p.sample_marginal(x0, t, generator) for p, x0 in zip(self.processes, b.x0))
        xt = self.constrain(xt, masks)
        logits = self.x0_logits(xt, t.float().to(dev), b.cond)
        loss_sum = torch.zeros(n, device=dev)
        bound_sum = torch.zeros(n, device=dev)
        count = torch.zeros(n, device=dev)
        for p, x0, x_t, lg, m, w in zip(self.processes, b.x0, xt, logits, masks, self.variable_weights):
            if cfg.loss == "mdlm":
                bound = mdlm_term(p, x0, x_t, lg, t)
                per = bound
            else:
                bound = vb_term(p, x0, x_t, lg, t, s) * cfg.steps
                per = bound + cfg.ce_weight * ce_term(p, x0, lg) if cfg.ce_weight > 0 else bound
            ls, c = masked_sum(per, m)
            bs, _ = masked_sum(bound.detach() + prior_term(p, x0), m)
            loss_sum, bound_sum, count = loss_sum + w * ls, bound_sum + bs, count + c
        count = count.clamp_min(1)
        return loss_sum / count, bound_sum / count

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        with self.seeded_step():
            b = self.encode(batch)
            loss, bound = self.diffusion_loss(b)
        loss = loss.mean()
        if not torch.isfinite(loss):
            raise PolydiffError(f"training loss is {loss.item()} at step {self.global_step}: lower --model.training.lr")
        bs = b.x0[0].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/bound_bits", bound.mean() / math.log(2), batch_size=bs)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        # fixed times and noise: comparable across epochs
        gen = torch.Generator().manual_seed(1234 + batch_idx)
        b = self.encode(batch)
        loss, bound = self.diffusion_loss(b, gen)
        bs = b.x0[0].shape[0]
        self.log("val/loss", loss.mean(), prog_bar=True, sync_dist=True, batch_size=bs)
        self.log("val/bound_bits", bound.mean() / math.log(2), prog_bar=True, sync_dist=True, batch_size=bs)
        return loss.mean()

    # ------------------------------------------------------------------ the bound
    @torch.no_grad()
    def bound_nats(self, b: CategoricalBatch, num_times: int = 0, steps: int | None = None,
                   generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Negative ELBO of every item in nats (summed over its positions) and its number of positions, both ``[B]``.

        Discrete time (``T = steps or diffusion.steps > 0``): ``num_times = 0`` is the exact sum over all ``T`` steps
        (D3PM eq. 1; one draw of ``x_t`` per step), ``num_times = n`` uses ``n`` stratified steps per item weighted
        ``T / n`` (an unbiased estimate). Continuous time (``T = 0``, MDLM): the integral of MDLM eq. 10 estimated at
        ``num_times`` stratified times per item (100 when 0).
        """
        self._check_variables(b)
        T = self.diffusion_config.steps if steps is None else steps
        n, dev = b.x0[0].shape[0], b.x0[0].device
        masks = b.masks()
        nats = torch.zeros(n, dtype=torch.float64, device=dev)
        count = torch.zeros(n, dtype=torch.float64, device=dev)
        for p, x0, m in zip(self.processes, b.x0, masks):
            total, c = masked_sum(prior_term(p, x0).double(), m)
            nats, count = nats + total, count + c
        if T <= 0:
            num_times = num_times if num_times > 0 else 100
        if num_times <= 0:
            rounds = [(torch.full((n,), k, dtype=torch.float64), 1.0) for k in range(1, T + 1)]
        else:
            u = (torch.arange(num_times, dtype=torch.float64) + torch.rand(n, num_times, generator=generator,
                                                                           dtype=torch.float64)) / num_times
            if T > 0:
                k = (u * T).floor().clamp(0, T - 1) + 1
                rounds = [(k[:, j], T / num_times) for j in range(num_times)]
            else:
                rounds = [((1 - u[:, j]).clamp_min(1e-4), 1.0 / num_times) for j in range(num_times)]
        for k, weight in rounds:
            t, s = (k / T, (k - 1) / T) if T > 0 else (k, k)
            xt = self.constrain(tuple(p.sample_marginal(x0, t, generator) for p, x0 in zip(self.processes, b.x0)),
                                masks)
            logits = self.x0_logits(xt, t.float().to(dev), b.cond)
            for p, x0, x_t, lg, m in zip(self.processes, b.x0, xt, logits, masks):
                term = vb_term(p, x0, x_t, lg, t, s) if T > 0 else mdlm_term(p, x0, x_t, lg, t)
                total, _ = masked_sum(term.double(), m)
                nats = nats + weight * total
        return nats, count

    def on_test_epoch_start(self) -> None:
        self._test_totals = {"nats": 0.0, "positions": 0.0}

    def test_step(self, batch: Any, batch_idx: int) -> None:
        gen = torch.Generator().manual_seed(4321 + batch_idx)
        nats, count = self.bound_nats(self.encode(batch), self.diffusion_config.bound_times, generator=gen)
        self._test_totals["nats"] += float(nats.sum())
        self._test_totals["positions"] += float(count.sum())

    def gather_test_totals(self) -> None:
        """Add the running sums of ``test_step`` over the processes of a distributed run (call once per epoch end)."""
        self._test_totals = sum_across_ranks(self, self._test_totals)

    def test_bound_bits(self) -> float:
        """Bits per position of the bound accumulated by ``test_step``."""
        return self._test_totals["nats"] / max(self._test_totals["positions"], 1.0) / math.log(2)

    def on_test_epoch_end(self) -> None:
        self.gather_test_totals()
        self.report_metrics({"bound_bits_per_position": self.test_bound_bits(), **self.test_metrics()})

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def generate(self, shapes: Sequence[tuple[int, ...]], cond: Any = None,
                 sampler: CategoricalSamplerConfig | None = None, seed: int = 0, progress: bool = False,
                 fixed: Optional[Sequence[Optional[Tensor]]] = None,
                 values: Optional[Sequence[Optional[Tensor]]] = None,
                 mask: Optional[Sequence[Optional[Tensor]]] = None) -> tuple[Tensor, ...]:
        """Samples of the per-variable ``shapes`` from a fixed seed; ``fixed`` / ``values`` pin given categories
        (infilling), ``mask`` is passed to :meth:`constrain`."""
        cfg = sampler or self.sampler_config
        gen = torch.Generator().manual_seed(seed)
        masks = tuple(mask) if mask is not None else (None,) * len(self.processes)

        def model_fn(xs: tuple[Tensor, ...], time: Tensor, index: Tensor) -> tuple[Tensor, ...]:
            return self.x0_logits(xs, time, self.select_condition(cond, index))

        def project(xs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            return self.constrain(xs, masks)

        bar, callback = None, None
        if progress:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                           TimeElapsedColumn(), transient=True)
            task = bar.add_task(f"sampling ({cfg.name}, {cfg.steps} steps)", total=cfg.steps)
            bar.start()

            def callback(i: int) -> None:
                bar.update(task, completed=i + 1)

        was_training = self.training
        self.eval()
        try:
            return sample_categorical_diffusion(model_fn, self.processes, shapes, cfg, self.diffusion_config.steps,
                                                gen, self.device, fixed, values, project, callback)
        finally:
            self.train(was_training)
            if bar is not None:
                bar.stop()
