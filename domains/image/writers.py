"""Files the image model writes: samples and inpaintings of ``polydiff sample`` (PNG files and a grid) and the
validation previews. The model's methods call these; they use only its public Python API (:mod:`.api`)."""

from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor

from polydiff.core.sampling import SamplerConfig
from polydiff.core.utils import PolydiffError
from polydiff.domains.image import io


def write_samples(model: Any, out_dir: Path, num_samples: int, sampler: SamplerConfig, seed: int,
                  input: Optional[Tensor] = None) -> list[Path]:
    """Write ``grid.png`` and one PNG per sample (``00012_class3.png``: the requested class).

    With ``input`` (the ``[C, H, W]`` image in [-1, 1] that the DataModule read from ``polydiff sample --input
    IMAGE``, resized to the model's size) ``inpaint_region`` is regenerated
    ``num_samples`` times: ``input.png``, ``masked.png`` (the region greyed out), ``00000_inpainted.png``, ...
    and ``grid.png`` (input, masked, then the inpainted versions).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    if model.text is not None or isinstance(input, list):
        return write_prompt_samples(model, out_dir, num_samples, sampler, seed, input)
    if input is not None:
        if tuple(input.shape) != (model.channels, model.image_size, model.image_size):
            raise PolydiffError(f"--input gave an image of shape {tuple(input.shape)} for a model of "
                                f"{(model.channels, model.image_size, model.image_size)}; set --data.image_size / "
                                "--data.channels to the model's")
        image = (input[None].float() + 1) / 2
        mask = io.region_mask(model.inpaint_region, model.image_size)
        filled = model.inpaint(image.expand(num_samples, -1, -1, -1), mask, seed=seed)
        masked = image * mask + 0.5 * (1 - mask)
        paths += [io.save_png(image[0], out_dir / "input.png"), io.save_png(masked[0], out_dir / "masked.png")]
        for i, img in enumerate(filled):
            paths.append(io.save_png(img, out_dir / f"{i:05d}_inpainted.png"))
        paths.append(io.save_grid(torch.cat([image, masked, filled]), out_dir / "grid.png"))
        return paths
    classes = model._classes(num_samples, None)
    images = model.sample_images(num_samples, classes, sampler, seed=seed, progress=True)
    for i, img in enumerate(images):
        name = f"{i:05d}.png" if classes is None else f"{i:05d}_class{int(classes[i])}.png"
        paths.append(io.save_png(img, out_dir / name))
    nrow = model.num_classes if model.num_classes and num_samples >= model.num_classes else None
    labels = None if classes is None else [str(int(c)) for c in classes]
    paths.append(io.save_grid(images, out_dir / "grid.png", nrow=nrow, labels=labels))
    return paths


def write_prompt_samples(model: Any, out_dir: Path, num_samples: int, sampler: SamplerConfig, seed: int,
                         prompts: Any) -> list[Path]:
    """``polydiff sample --prompt TEXT`` (or ``--prompts FILE``): ``num_samples`` images per prompt
    (``00003_p001.png``: sample 3, of prompt 1), ``prompts.txt`` (one line per prompt) and ``grid.png`` (one row per
    prompt)."""
    if model.text is None:
        raise PolydiffError("--prompt needs a text-conditioned model (--model.text); this one is conditioned on classes")
    if not isinstance(prompts, list) or not prompts:
        raise PolydiffError("a text-conditioned model samples from prompts: pass --prompt \"a 3 to the left of a 5\" "
                            "or --prompts FILE (one prompt per line)")
    repeated = [p for p in prompts for _ in range(num_samples)]
    images = model.sample_prompts(repeated, sampler, seed=seed, progress=True)
    paths = []
    for i, img in enumerate(images):
        paths.append(io.save_png(img, out_dir / f"{i % num_samples:05d}_p{i // num_samples:03d}.png"))
    (out_dir / "prompts.txt").write_text("".join(f"{p}\n" for p in prompts))
    paths.append(out_dir / "prompts.txt")
    paths.append(io.save_grid(images, out_dir / "grid.png", nrow=num_samples))
    return paths


def write_preview(model: Any) -> None:
    """Every ``preview_every_n_epochs`` validation epochs, a grid of samples (one row per class) in
    ``<run dir>/previews/``."""
    path = model.preview_path(model.preview_every_n_epochs)
    if path is None:
        return
    if model.text is not None:
        prompts = [p for c in range(10) for p in [f"the digit {c}", f"a {c} to the left of a {(c + 3) % 10}"]]
        images = model.sample_prompts([p for p in prompts for _ in range(model.preview_per_class)], seed=0)
        io.save_grid(images, path, nrow=model.preview_per_class * 2)
        return
    n = model.num_classes * model.preview_per_class if model.num_classes else 8 * model.preview_per_class
    images = model.sample_images(n, seed=0)
    order = torch.arange(n).reshape(-1, model.num_classes).T.reshape(-1) if model.num_classes else torch.arange(n)
    nrow = model.preview_per_class if model.num_classes else None
    io.save_grid(images[order], path, nrow=nrow)
    model.log_media("previews", image=io.make_grid(images[order], nrow))


def write_predictions(model: Any, images: Tensor, batch: Any, out_dir: Path, prefix: str) -> list[Path]:
    """``polydiff predict``: one PNG per generated image (``<prefix>_003_class7.png``: the class of the test item it
    was drawn for) and ``<prefix>_grid.png``."""
    labels = batch[1] if isinstance(batch, (list, tuple)) and len(batch) > 1 else None
    paths = []
    for i, img in enumerate(images):
        label = f"_class{int(labels[i])}" if labels is not None and model.num_classes and int(labels[i]) >= 0 else ""
        paths.append(io.save_png(img, out_dir / f"{prefix}_{i:03d}{label}.png"))
    paths.append(io.save_grid(images, out_dir / f"{prefix}_grid.png"))
    return paths
