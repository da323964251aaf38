"""A loss-curve PNG at the end of ``fit``, drawn from the run's CSV log (training loss per logged step, validation loss
per validation)."""

import csv
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger


class LossCurve(Callback):
    """Write ``loss_curve.png`` beside ``metrics.csv`` when ``fit`` ends (rank 0, CSV logger only)."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = next((lg for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)
        if logger is None or not trainer.is_global_zero:
            return
        logger.save()
        path = Path(logger.log_dir) / "metrics.csv"
        if path.is_file():
            plot_losses(path, path.parent / "loss_curve.png")


def plot_losses(metrics_csv: Path, out: Path) -> Path | None:
    """Plot every ``*loss*`` column of a Lightning ``metrics.csv`` against ``step``; None when there is none."""
    series: dict[str, list[tuple[int, float]]] = {}
    with metrics_csv.open() as f:
        for row in csv.DictReader(f):
            step = row.get("step", "")
            for key, value in row.items():
                if "loss" in key and value not in ("", None) and step:
                    series.setdefault(key, []).append((int(float(step)), float(value)))
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, points in sorted(series.items()):
        steps, values = zip(*sorted(points))
        ax.plot(steps, values, label=key, marker="o" if len(points) < 30 else None, markersize=3)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss")
    ax.set_yscale("log" if all(v > 0 for pts in series.values() for _, v in pts) else "linear")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
