"""The table of ``polydiff test`` for video: the model's clips and the controls, scored by the same
:class:`~polydiff.domains.video.metrics.VideoEvaluator`.

Rows: ``model`` (unconditional clips: no label is given; a model with a labeler, ``infer_class``, draws each clip's
class from its class prior and generates the clip with it under guidance, otherwise the null class), ``null_class``
(with a labeler: the same model given the null class, no guidance), ``real`` (test clips), ``shuffled`` (real clips
with their frames in random order), ``independent`` (real frames from different clips), ``same_class_frames`` (with a
labeler: frame t of each model clip taken from a model clip of the same class: what the label alone gives),
``inflated`` (the image checkpoint of ``training.init_from`` inflated, before any temporal training: the image model
sampled frame by frame, null class), ``inflated_labelled`` (the same, each clip given the model row's class with
guidance), ``frame_by_frame`` (this model, one frame at a time; only after joint image training),
``continued_2x`` (the model's clips continued to twice the training length), ``animated_real`` (the first frames of the
real test clips animated: the known-frame conditioning), ``animated`` (the first frames of the model's own clips
animated: two-stage sampling, a first frame then the clip that starts with it).
"""

from typing import Any

import torch

from polydiff.core.base import TrainingConfig
from polydiff.core.module import DiffusionConfig, ObjectiveConfig
from polydiff.core.sampling import SamplerConfig
from polydiff.domains.video.controls import independent_frames, same_class_frames, shuffle_frames
from polydiff.domains.video.metrics import VideoEvaluator

#: the init arguments of the model that are dataclasses (a checkpoint stores them as dicts)
CONFIGS = {"diffusion": DiffusionConfig, "objective": ObjectiveConfig, "sampler": SamplerConfig,
           "training": TrainingConfig}

#: the rows in the order of the table (those a model does not have are left out)
ROWS = ("model", "null_class", "real", "shuffled", "independent", "same_class_frames", "inflated", "inflated_labelled",
        "frame_by_frame", "continued_2x", "animated_real", "animated")

COLUMNS = ("fd", "fd_relative", "identity_consistency", "frame_agreement", "motion_residual", "mean_step")


def format_table(table: dict[str, dict[str, float]], floor: float, ceiling: float) -> str:
    """A Markdown table of the rows of ``table``."""
    cols = [c for c in COLUMNS if any(c in row for row in table.values())]
    lines = ["| clips | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, row in table.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[c]:.3f}" if c in row else "" for c in cols) + " |")
    lines.append(f"\nper-frame FD floor (train vs test frames) {floor:.2f}, ceiling (noise frames) {ceiling:.2f}")
    return "\n".join(lines)


def rebuild(model: Any) -> Any:
    """A fresh model with ``model``'s settings (its temporal layers at their zero-initialised outputs)."""
    args = {k: (CONFIGS[k](**v) if k in CONFIGS and isinstance(v, dict) else v) for k, v in model.hparams.items()
            if not k.startswith("_")}
    return type(model)(**args)


def evaluate(model: Any, datamodule: Any, verbose: bool = True) -> dict[str, dict[str, float]]:
    """Score ``model``'s unconditional clips and the controls; the rows as described in the module docstring."""
    train_v, train_y = datamodule.split_tensors("train")
    test_v, _ = datamodule.split_tensors("test")
    n = model.eval_num_samples
    ev = VideoEvaluator(train_v, train_y, test_v, model.num_classes)
    shape = (n, model.channels, model.frames, model.image_size, model.image_size)
    classes = model.infer_classes(torch.zeros(shape), torch.zeros(n, model.frames), seed=0)  # None: no labeler
    samples = model.sample_videos(n, classes, seed=0, progress=verbose)
    table = {"model": ev.report(samples * 2 - 1)}
    if classes is not None:
        table["null_class"] = ev.report(model.sample_videos(n, seed=0, progress=verbose, infer_class=False) * 2 - 1)
        table["same_class_frames"] = ev.report(same_class_frames(samples * 2 - 1, classes))
    real = test_v[:n]
    table["real"] = ev.report(real)
    table["shuffled"] = ev.report(shuffle_frames(real))
    table["independent"] = ev.report(independent_frames(real))
    if model.eval_controls:
        init_from = model.training_config.init_from
        if init_from:
            inflated = rebuild(model)
            inflated.load_weights(init_from, strict=False)
            inflated.to(model.device)
            inflated.sampler_config = model.sampler_config  # the same sampler, steps and guidance as the model's rows
            table["inflated"] = ev.report(inflated.sample_videos(n, seed=0, progress=verbose, infer_class=False) * 2 - 1)
            if classes is not None:
                table["inflated_labelled"] = ev.report(inflated.sample_videos(n, classes, seed=0, progress=verbose) * 2
                                                       - 1)
        if model.image_prob > 0:
            table["frame_by_frame"] = ev.report(model.sample_frames(n, seed=0, progress=verbose) * 2 - 1)
    if model.eval_continuation:
        longer = model.extend(samples, 2 * model.frames, seed=1, progress=verbose)
        table["continued_2x"] = ev.report(longer * 2 - 1)
    # the first frame given (known-frame conditioning): real test frames, and the model's own first frames
    table["animated_real"] = ev.report(model.animate((real[:, :, 0] + 1) / 2, seed=2, progress=verbose) * 2 - 1)
    table["animated"] = ev.report(model.animate(samples[:, :, 0], seed=3, progress=verbose) * 2 - 1)
    table = {name: table[name] for name in ROWS if name in table}
    for row in table.values():
        row["fd_floor"], row["fd_ceiling"] = ev.fd_floor, ev.fd_ceiling
    if verbose:
        print(format_table(table, ev.fd_floor, ev.fd_ceiling))
    return table
