"""A PNG of log-mel spectrograms side by side (the "listen-equivalent" check of a vocoder)."""

from pathlib import Path

from torch import Tensor


def save_spectrograms(path: str | Path, panels: list[tuple[str, Tensor]], sample_rate: int, hop_length: int,
                      vmin: float | None = None) -> Path:
    """Write one row per ``(title, log_mel [n_mels, F])`` panel, on a shared colour scale, to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arrays = [p.detach().float().cpu().numpy() for _, p in panels]
    lo = min(a.min() for a in arrays) if vmin is None else vmin
    hi = max(a.max() for a in arrays)
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.3 * len(panels)), squeeze=False)
    for ax, (title, _), arr in zip(axes[:, 0], panels, arrays):
        seconds = arr.shape[1] * hop_length / sample_rate
        im = ax.imshow(arr, origin="lower", aspect="auto", vmin=lo, vmax=hi, extent=(0, seconds, 0, arr.shape[0]),
                       cmap="magma")
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("mel band")
    axes[-1, 0].set_xlabel("seconds")
    fig.colorbar(im, ax=axes[:, 0].tolist(), shrink=0.8, label="log mel")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


