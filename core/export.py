"""Trained models as folders that load without pickle, like diffusers' ``save_pretrained``.

``polydiff export --ckpt_path RUN/checkpoints/last.ckpt --out DIR`` writes

* ``model.safetensors``: the checkpoint's weights (the EMA weights when training used EMA) and buffers;
* ``config.yaml``: a LightningCLI config (the model's class and settings, and the DataModule of training), so
  ``polydiff sample --pretrained DIR`` and ``polydiff test --config DIR/config.yaml`` rebuild the same model;
* ``polydiff.json``: the domain, the class, the format version and what else the model keeps in its checkpoints
  (e.g. a time-series model's column names and normalisation), as JSON;
* ``README.md``: a model card written from the run (steps, settings, the ``metrics.json`` of ``polydiff test`` when
  one lies in the run folder).

:func:`load` returns the right domain model from a checkpoint or an export; nothing is unpickled from an export.
"""

import importlib
import json
from pathlib import Path
from typing import Any

import torch
import yaml

from polydiff.core.base import PolydiffModule, check_checkpoint_domain, read_checkpoint
from polydiff.core.utils import PolydiffError

FORMAT = 1
#: checkpoint keys that are Lightning's training state, not part of a model
TRAINING_STATE = ("state_dict", "optimizer_states", "lr_schedulers", "loops", "callbacks", "hyper_parameters",
                  "datamodule_hyper_parameters", "epoch", "global_step", "pytorch-lightning_version", "hparams_name",
                  "datamodule_hparams_name", "current_model_state", "averaging_state", "polydiff_rng",
                  "polydiff_domain", "polydiff_class")


def _plain(value: Any) -> Any:
    """Settings as YAML/JSON values (tuples as lists, tensors as lists)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "__dataclass_fields__"):
        return _plain(vars(value))
    return value


def _settings(hparams: dict[str, Any] | None) -> dict[str, Any]:
    return {k: _plain(v) for k, v in (hparams or {}).items() if not k.startswith("_")}


def _import(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise PolydiffError(f"model class {class_path!r} cannot be imported; is this export from another polydiff "
                            "version?") from None


def export_checkpoint(ckpt_path: str, out: str, overwrite: bool = False) -> Path:
    """Write the export folder ``out`` for the checkpoint ``ckpt_path``; return its path."""
    from safetensors.torch import save_file

    ckpt = read_checkpoint(ckpt_path)
    domain, class_path = ckpt.get("polydiff_domain"), ckpt.get("polydiff_class")
    if domain is None or class_path is None:
        raise PolydiffError(f"checkpoint {ckpt_path} was not written by polydiff fit (no domain or class); export a "
                            "polydiff checkpoint")
    folder = Path(out)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())) and not overwrite:
        raise PolydiffError(f"--out {folder} already exists and is not an empty folder; pass a new --out or "
                            "--overwrite true")
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in ckpt["state_dict"].items()}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"polydiff_domain": domain, "format": str(FORMAT)})
    config: dict[str, Any] = {"model": {"class_path": class_path, "init_args": _settings(ckpt.get("hyper_parameters"))}}
    data = ckpt.get("datamodule_hyper_parameters")
    if data and data.get("_class_path"):
        config["data"] = {"class_path": data["_class_path"], "init_args": _settings(data)}
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    extras = {k: _plain(v) for k, v in ckpt.items() if k not in TRAINING_STATE and k.startswith("polydiff_")}
    meta = {"format": FORMAT, "domain": domain, "class_path": class_path, "global_step": int(ckpt.get("global_step", 0)),
            "extras": extras}
    (folder / "polydiff.json").write_text(json.dumps(meta, indent=2))
    (folder / "README.md").write_text(model_card(ckpt_path, config, meta))
    print(f"exported {ckpt_path} to {folder}/ (model.safetensors, config.yaml, polydiff.json, README.md)")
    return folder


def model_card(ckpt_path: str, config: dict[str, Any], meta: dict[str, Any]) -> str:
    run = Path(ckpt_path).resolve().parents[1]
    metrics = next(iter(sorted(run.rglob("metrics.json"))), None)
    lines = [f"# polydiff {meta['domain']} model", "",
             f"`{meta['class_path']}` trained for {meta['global_step']} optimiser steps (from `{ckpt_path}`).", "",
             "## Use", "", "```python", "from polydiff.core import load", "", "model = load(\"<this folder>\")",
             "```", "", "```bash", "polydiff sample --pretrained <this folder> --num_samples 16 --out samples", "```",
             "", "## Settings", "", "```yaml", yaml.safe_dump(config, sort_keys=False).strip(), "```", "",
             "## Evaluation", ""]
    if metrics is not None:
        values = json.loads(metrics.read_text()).get("metrics", {})
        lines += [f"From `{metrics}` (`polydiff test`; controls beside the model where the domain has them):", "",
                  "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in values.items()]
    else:
        lines.append("No `polydiff test` metrics were found in the run folder; run `polydiff test` before exporting to "
                     "have them here.")
    return "\n".join(lines) + "\n"


def read_export(path: str | Path) -> dict[str, Any]:
    """An export folder as a checkpoint-like dict (``state_dict``, ``hyper_parameters``, domain, class, extras)."""
    from safetensors.torch import load_file

    folder = Path(path)
    files = [folder / n for n in ("model.safetensors", "config.yaml", "polydiff.json")]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise PolydiffError(f"{folder} is not a polydiff export (missing {missing}); write one with 'polydiff export "
                            "--ckpt_path <ckpt> --out <folder>'")
    meta = json.loads(files[2].read_text())
    if meta.get("format") != FORMAT:
        raise PolydiffError(f"{folder} has export format {meta.get('format')!r}; this polydiff reads format {FORMAT}")
    try:
        state = load_file(str(files[0]))
    except Exception as exc:  # noqa: BLE001 - a damaged file is the same problem for the user
        raise PolydiffError(f"{files[0]} cannot be read ({type(exc).__name__}: {exc}); export the checkpoint again") \
            from None
    config = yaml.safe_load(files[1].read_text())
    return {"state_dict": state, "hyper_parameters": config["model"].get("init_args", {}),
            "polydiff_domain": meta["domain"], "polydiff_class": meta["class_path"], **meta.get("extras", {})}


def load(path: str | Path, map_location: str = "cpu") -> PolydiffModule:
    """The domain model of a polydiff checkpoint (``.ckpt``) or export folder, in eval mode, with its weights."""
    p = Path(path)
    if p.is_dir():
        ckpt = read_export(p)
        cls = _import(ckpt["polydiff_class"])
        model = instantiate(cls, ckpt["hyper_parameters"])
        model.load_checkpoint_dict(ckpt, str(p))
        return model.to(map_location).eval()
    ckpt = read_checkpoint(str(p))
    class_path = ckpt.get("polydiff_class")
    if class_path is None:
        raise PolydiffError(f"checkpoint {p} was not written by polydiff fit (no model class); pass a polydiff .ckpt")
    cls = _import(class_path)
    check_checkpoint_domain(ckpt, getattr(cls, "domain", ckpt.get("polydiff_domain")), str(p))
    return cls.load_from_checkpoint(str(p), map_location=map_location, weights_only=True).eval()


def instantiate(cls: type, init_args: dict[str, Any]) -> PolydiffModule:
    """``cls(**init_args)`` with nested settings turned into their dataclasses, as LightningCLI does."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "model")
    config = parser.parse_object({"model": init_args})
    return parser.instantiate_classes(config).model
