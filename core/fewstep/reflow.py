"""Reflow (Liu, Gong & Liu 2022, "Flow straight and fast"): flow matching on the teacher's own couplings.

The teacher's probability-flow ODE couples each noise ``z`` with an end point ``x1 = ODE(z)``. Training the student's
denoising loss on the pairs ``(x1, z)`` instead of independent (data, noise) draws (``x_t = alpha x1 + sigma z``) gives
the 2-rectified flow, whose paths are straighter, so that few Euler (DDIM) steps follow them. In flow coordinates
``x / (alpha + sigma)`` every Gaussian process is a rectified flow, so the student keeps the teacher's process and
parameterisation. The pairs are generated once, in batches written to a folder (a rerun skips the finished ones).
"""

import math
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
from torch import Tensor

from polydiff.core.denoiser import Denoiser
from polydiff.core.fewstep.objective import FewStepObjective, take
from polydiff.core.grids import logsnr_bounds
from polydiff.core.objective import denoising_loss, sample_logsnr
from polydiff.core.samplers import flow_euler
from polydiff.core.utils import PolydiffError


def _cat(items: list[Any]) -> Any:
    first = items[0]
    if first is None:
        return None
    if isinstance(first, Tensor):
        return torch.cat(items)
    if isinstance(first, dict):
        return {k: _cat([it[k] for it in items]) for k in first}
    if isinstance(first, (list, tuple)):
        return type(first)(_cat(list(parts)) for parts in zip(*items))
    raise PolydiffError(f"reflow pairs need conditions made of tensors, got {type(first).__name__}")


class PairCache:
    """(noise, teacher end point, condition) triples in ``folder/pairs_NNNNN.pt``, one file per batch.

    A file is written to a temporary name and renamed when complete, so an interrupted generation resumes at the
    first missing batch; :meth:`load` reads them all back.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path(self, index: int) -> Path:
        return self.folder / f"pairs_{index:05d}.pt"

    def missing(self, num_batches: int) -> list[int]:
        return [i for i in range(num_batches) if not self.path(i).is_file()]

    def write(self, index: int, noise: Tensor, end: Tensor, cond: Any) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.path(index).with_suffix(".tmp")
        torch.save({"noise": noise.float().cpu(), "end": end.float().cpu(), "cond": cond}, tmp)
        tmp.replace(self.path(index))

    def load(self, num_batches: int) -> tuple[Tensor, Tensor, Any]:
        parts = []
        for i in range(num_batches):
            try:
                parts.append(torch.load(self.path(i), map_location="cpu", weights_only=True))
            except Exception as exc:  # noqa: BLE001 - any unreadable file means the same to the user
                raise PolydiffError(f"reflow pair file {self.path(i)} cannot be read ({type(exc).__name__}); delete it "
                                    "and rerun to regenerate it") from None
        return (torch.cat([p["noise"] for p in parts]), torch.cat([p["end"] for p in parts]),
                _cat([p["cond"] for p in parts]))


def _progress(total: int, description: str) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TimeRemainingColumn())
    return bar, bar.add_task(description, total=total)


class Reflow(FewStepObjective):
    """k-rectified flow from a (k-1)-rectified teacher: pairs from the teacher's ODE, then flow matching on them.

    At fit start, ``num_batches`` batches of pairs are generated (conditions taken from the DataModule's validation
    batches, cycled; noise from ``seed`` and the batch index) with the teacher's sampler ``sampler`` at ``steps`` and
    ``guidance``, and cached in ``pairs`` (default ``<run dir>/reflow_pairs``). Each training step then draws a batch of
    pairs (as many as the data batch holds) and applies the model's own denoising loss (its time sampling and
    weighting) with ``x0`` = end point and noise = the paired noise.

    Args:
        teacher: teacher checkpoint (None: the model's ``training.init_from``).
        guidance: the teacher's classifier-free guidance scale when generating the pairs.
        pairs: the folder of cached pairs (None: ``<run dir>/reflow_pairs``; point several runs at one folder to share).
        num_batches: batches of pairs to generate (each the size of a validation batch).
        sampler: the teacher's ODE solver for the pairs (a deterministic one: dpmpp_2m, heun, unipc, ...).
        steps: its steps.
        seed: seed of the pairs' noise.
    """

    def __init__(self, teacher: Optional[str] = None, guidance: float = 1.0, pairs: Optional[str] = None,
                 num_batches: int = 128, sampler: str = "dpmpp_2m", steps: int = 20, seed: int = 0) -> None:
        super().__init__(teacher, guidance)
        self.pairs, self.num_batches, self.sampler, self.steps, self.seed = pairs, num_batches, sampler, steps, seed
        self.data: Optional[tuple[Tensor, Tensor, Any]] = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        folder = Path(self.pairs) if self.pairs else Path(trainer.log_dir or trainer.default_root_dir) / "reflow_pairs"
        cache = PairCache(folder)
        num = 1 if trainer.fast_dev_run else self.num_batches
        todo = cache.missing(num)
        if todo:
            self.generate(trainer.datamodule, pl_module, cache, todo)
        self.data = cache.load(num)

    @torch.no_grad()
    def generate(self, datamodule: Any, model: Any, cache: PairCache, todo: list[int]) -> None:
        """Teacher end points for the batches ``todo``, written to ``cache`` one by one (with a progress bar)."""
        cfg = replace(self.teacher.sampler_config, name=self.sampler, steps=self.steps, guidance=self.guidance)
        loader = datamodule.val_dataloader()
        batches = len(loader)
        if batches == 0:
            raise PolydiffError("reflow takes the pairs' conditions from the validation split, which is empty")
        bar, task = _progress(len(todo), f"reflow pairs ({self.sampler}, {self.steps} steps) -> {cache.folder}")
        bar.start()
        try:
            todo_set, done = set(todo), 0
            index = 0
            while done < len(todo):
                for batch in loader:
                    if index in todo_set:
                        b = model.encode(model.transfer_batch_to_device(batch, model.device, 0))
                        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
                        noise = torch.randn(b.x0.shape, generator=gen, dtype=torch.float64)
                        end = self.teacher.generate(tuple(b.x0.shape), cond=b.cond, sampler=cfg, seed=index,
                                                    x_init=noise)
                        cache.write(index, noise, end, _cpu(b.cond))
                        done += 1
                        bar.update(task, completed=done)
                    index += 1
                    if done == len(todo):
                        break
        finally:
            bar.stop()

    def loss(self, model: Any, batch: Any) -> Tensor:
        noise_all, end_all, cond_all = self.data
        b = batch.x0.shape[0]
        idx = torch.randint(0, len(end_all), (b,))
        dev = batch.x0.device
        x1 = end_all[idx].to(dev, batch.x0.dtype)
        z = noise_all[idx].to(dev, batch.x0.dtype)
        cond = take(cond_all, idx)
        cond = cond.to(dev) if isinstance(cond, Tensor) else cond
        obj = model.objective
        lam = sample_logsnr(model.process, b, obj.time_sampling, obj.time_loc, obj.time_scale, None, dev)
        return denoising_loss(model.denoiser, x1, z, lam, cond, None, obj.weighting, obj.min_snr_gamma)


def _cpu(cond: Any) -> Any:
    if isinstance(cond, Tensor):
        return cond.cpu()
    if isinstance(cond, dict):
        return {k: _cpu(v) for k, v in cond.items()}
    if isinstance(cond, (list, tuple)):
        return type(cond)(_cpu(v) for v in cond)
    return cond


@torch.no_grad()
def straightness(denoiser: Denoiser, noise: Tensor, cond: Any = None, steps: int = 64,
                 sigma_max: float | None = 80.0, sigma_min: float = 0.002) -> tuple[float, Tensor]:
    """Straightness of the ODE paths from ``noise`` (Liu et al. 2022, Def. 3.2):
    ``S = int_0^1 E |(Z_1 - Z_0) - dZ_t/dt|^2 dt``, per element, in flow coordinates ``Z = x / (alpha + sigma)``,
    ``t = sigma / (alpha + sigma)`` (where the flow-matching ODE is ``dZ/dt = eps_hat - x0_hat``); 0 for straight paths.

    Integrated by Euler steps uniform in flow time (:func:`polydiff.core.samplers.flow_euler`) from the grid's start
    (``sigma_max`` in VE units) to 0; the velocity of the straight path is the displacement over that span. Returns
    ``(S, end points)``.
    """
    process = denoiser.process
    lo, _ = logsnr_bounds(process, sigma_min, sigma_max)
    tau0 = 1.0 / (1.0 + math.exp(lo / 2))  # flow time of the start: sigma~ / (1 + sigma~)
    tau = torch.linspace(tau0, 0.0, steps + 1, dtype=torch.float64)
    grid = 2 * (torch.log1p(-tau) - torch.log(tau))  # log-SNR of flow time tau; +inf at 0
    x = noise.double() * process.prior_std(grid[0], denoiser.sigma_data)
    alpha, sigma = process.alpha_sigma(grid)
    velocities: list[Tensor] = []

    def record(i: int, x_t: Tensor, x0: Tensor) -> None:
        a, s = float(alpha[i]), float(sigma[i])
        velocities.append((x_t / (a + s) - x0) / (s / (a + s)))

    z0 = x / float(alpha[0] + sigma[0])
    end = flow_euler(denoiser, x, grid, cond, callback=record)
    straight = (z0 - end) / tau0
    s_value = torch.stack([(straight - u).square().flatten(1).mean(1) for u in velocities]).mean()
    return float(s_value), end
