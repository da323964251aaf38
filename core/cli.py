"""The ``polydiff`` command: LightningCLI with a ``sample`` subcommand.

    polydiff fit    --config recipes/<domain>/<recipe>.yaml [--trainer.* --model.* --data.*]
    polydiff test   --config <recipe> --ckpt_path <ckpt>          # metrics.json in the run directory
    polydiff sample --config <recipe> --ckpt_path <ckpt> --num_samples N --sampler NAME --steps K --out DIR
    polydiff export --ckpt_path <ckpt> --out DIR                  # a folder that loads without pickle
    polydiff sample --pretrained DIR --num_samples N --out OUT    # sample from an export
    polydiff validate | predict | --help | fit --print_config

Errors in the user's input (files, settings, checkpoints) end with one line naming the thing and the fix.
"""

import importlib
import logging
import re
import sys
import warnings
from pathlib import Path
from typing import Any, NoReturn, Protocol, runtime_checkable

import lightning as L
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from polydiff.core.base import check_checkpoint_domain, read_checkpoint
from polydiff.core.trainer import PolydiffTrainer
from polydiff.core.utils import PolydiffError


class PolydiffArgumentParser(LightningArgumentParser):
    """LightningCLI's parser whose errors are one line naming the setting, the value and the fix (jsonargparse's own
    print the usage and a multi-line account of every type it tried)."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # a nested parser that jsonargparse tries and catches: keep its exception
            super().error(message, ex)
        raise PolydiffError(one_line_parse_error(message)) from None


def one_line_parse_error(message: str) -> str:
    """jsonargparse's error ``message`` as one line: an invalid choice names its choices; anything else keeps the first
    line of each part."""
    key = re.search(r'Parser key "([^"]+)"', message)
    given = re.search(r"Given value: (.*)", message)
    choices = re.search(r"Literal\[([^\]]*)\]", message)
    if key and given and choices:
        name = key.group(1).split(".")[-1]
        return f"unknown {name} {given.group(1).strip()!r}; choose one of [{choices.group(1)}] (--{key.group(1)})"
    noise = ("Parser key", "Does not validate against", "Subtypes", "Errors", "Given value type",
             "Expected a <class 'NoneType'>", "Problem with given class_path")
    lines = [ln.strip().removeprefix("- ").strip().rstrip(":") for ln in message.splitlines()]
    lines = [ln for ln in lines if ln]
    keep = list(dict.fromkeys(ln for ln in lines if not ln.startswith(noise))) or lines[:1]
    where = f"--{key.group(1)}: " if key else ""
    return f"{where}{'; '.join(keep[:2]) or message.strip()} (polydiff <subcommand> --help lists the settings)"


class PolydiffSaveConfig(SaveConfigCallback):
    """Lightning's config saver that never replaces an earlier run's ``config.yaml``: with a logger every run has its
    own ``version_N`` folder; without one, runs share ``default_root_dir`` and a later one writes ``config_1.yaml``, ..."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not self.already_saved and trainer.logger is None and trainer.is_global_zero:
            folder = Path(trainer.default_root_dir)
            stem, suffix = Path(self.config_filename).stem, Path(self.config_filename).suffix
            name, k = self.config_filename, 0
            while (folder / name).exists():
                k += 1
                name = f"{stem}_{k}{suffix}"
            self.config_filename = name
        super().setup(trainer, pl_module, stage)


class PolydiffCLI(LightningCLI):
    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {**LightningCLI.subcommands(), "sample": {"model", "datamodule"}}

    def _parse_ckpt_path(self) -> None:
        """Checkpoint hyper-parameters replace the recipe's model settings (so the network matches the weights), but
        ``--model.*`` given on the command line still apply on top (e.g. ``--model.sampler.steps`` at test time).

        Before Lightning reads the file, polydiff opens it once with the safe loader: a missing, truncated, foreign or
        refused file, or one from another domain than the recipe's model, ends in one line naming it."""
        self._check_ckpt_path()
        super()._parse_ckpt_path()
        sub = self.config.get("subcommand")
        overrides = model_overrides(self._raw_args)
        if sub and overrides and self.config[sub].get("ckpt_path"):
            self.config = self.parser.parse_args([sub, *overrides], namespace=self.config)


    def before_instantiate_classes(self) -> None:
        """Fill the model settings that the recipe leaves ``null`` from the data (a DataModule's ``model_settings()``,
        e.g. a table's feature count), so they need not be typed by hand; set ones are checked by the model."""
        sub = self.config.get("subcommand")
        cfg = self.config[sub] if sub else self.config
        data, model = cfg.get("data"), cfg.get("model")
        data_class = _import_class(data["class_path"]) if data is not None and data.get("class_path") else None
        if data_class is None or not issubclass(data_class, GivesModelSettings) or model is None:
            return
        model_args = model.get("init_args")
        if model_args is None or not any(model_args.get(k, 0) is None for k in vars(model_args)):
            return
        init = data.get("init_args")
        datamodule = data_class(**(init.as_dict() if init is not None else {}))
        for key, value in datamodule.model_settings().items():
            if key in model_args and model_args[key] is None:
                model_args[key] = value

    def _check_ckpt_path(self) -> None:
        sub = self.config.get("subcommand")
        path = self.config[sub].get("ckpt_path") if sub else None
        if not path or path in LIGHTNING_CKPT_ALIASES:
            return
        checkpoint = read_checkpoint(path)
        model = self.config[sub].get("model")
        class_path = model.get("class_path") if model is not None and hasattr(model, "get") else None
        domain = getattr(_import_class(class_path), "domain", None) if class_path else None
        if domain is not None:
            check_checkpoint_domain(checkpoint, domain, path)


def _import_class(class_path: str) -> type | None:
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None  # LightningCLI reports the bad class path itself


@runtime_checkable
class GivesModelSettings(Protocol):
    """A DataModule that knows model settings from its data (``{"n_features": 7}``)."""

    def model_settings(self) -> dict[str, Any]: ...


#: ``--ckpt_path`` values that name no file (Lightning resolves them itself)
LIGHTNING_CKPT_ALIASES = ("last", "best", "hpc", "registry")


def model_overrides(args: list[str]) -> list[str]:
    """The ``--model.*`` options of a command line, with their values."""
    out: list[str] = []
    for i, arg in enumerate(args):
        if arg.startswith("--model."):
            out.append(arg)
            if "=" not in arg and i + 1 < len(args):
                out.append(args[i + 1])
    return out


def build_cli(args: list[str] | None = None, run: bool = True) -> PolydiffCLI:
    PolydiffCLI._raw_args = list(sys.argv[1:] if args is None else args)
    return PolydiffCLI(
        L.LightningModule,
        L.LightningDataModule,
        parser_class=PolydiffArgumentParser,
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_class=PolydiffTrainer,
        save_config_callback=PolydiffSaveConfig,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
        auto_configure_optimizers=True,  # --optimizer / --lr_scheduler replace the model's AdamW and warm-up when given
    )


def resolve_recipes(args: list[str]) -> list[str]:
    """Let ``--config recipes/image/digits.yaml`` (or ``image/digits.yaml``) find the recipes shipped inside the installed
    package when no such file exists relative to the working directory."""
    from importlib.resources import files

    out = list(args)
    for i, arg in enumerate(out[:-1]):
        if arg == "--config" and not Path(out[i + 1]).exists():
            rel = out[i + 1].removeprefix("recipes/")
            packaged = Path(str(files("polydiff.recipes"))) / rel
            if packaged.is_file():
                out[i + 1] = str(packaged)
    return out


def export_main(args: list[str]) -> None:
    """``polydiff export --ckpt_path CKPT --out DIR [--overwrite true]`` (see :mod:`polydiff.core.export`)."""
    import argparse

    from polydiff.core.export import export_checkpoint

    parser = argparse.ArgumentParser(prog="polydiff export", description="Write a checkpoint as a folder that loads "
                                     "without pickle: model.safetensors, config.yaml, polydiff.json, README.md.")
    parser.add_argument("--ckpt_path", required=True, help="checkpoint written by polydiff fit")
    parser.add_argument("--out", required=True, help="folder to write (new or empty)")
    parser.add_argument("--overwrite", default="false", choices=["true", "false"], help="write into a non-empty folder")
    ns = parser.parse_args(args)
    export_checkpoint(ns.ckpt_path, ns.out, overwrite=ns.overwrite == "true")


def with_pretrained_config(args: list[str]) -> list[str]:
    """``polydiff sample --pretrained DIR`` without ``--config`` takes the export's own config."""
    if "--pretrained" not in args or "--config" in args or "-c" in args:
        return args
    folder = args[args.index("--pretrained") + 1] if args.index("--pretrained") + 1 < len(args) else ""
    return [args[0], "--config", str(Path(folder) / "config.yaml"), *args[1:]]


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``polydiff`` console script (returns None so that the exit status is 0 on success)."""
    # the console script passes sys.argv on as ``args`` (after resolving packaged recipes): that is intended
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    # "Seed set to N" on stderr before any error would make a one-line error two lines; the seed is in config.yaml
    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)
    # printed by torch-geometric's import on recent torch; nothing a user of polydiff can act on
    warnings.filterwarnings("ignore", message=r"`torch.jit.script` is deprecated", category=FutureWarning)
    argv = list(sys.argv[1:] if args is None else args)
    try:
        if argv[:1] == ["export"]:
            export_main(argv[1:])
            return
        build_cli(resolve_recipes(with_pretrained_config(argv)))
    except Exception as exc:  # noqa: BLE001 - a PolydiffError inside another exception is still the user's one line
        cause = polydiff_cause(exc)
        if cause is None:
            raise
        print(f"polydiff: error: {cause}", file=sys.stderr)
        raise SystemExit(2) from None


def polydiff_cause(exc: BaseException) -> PolydiffError | None:
    """The PolydiffError that ``exc`` is or was raised from (jsonargparse wraps errors raised while it instantiates a
    class, e.g. a model's check of its settings, in its own)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, PolydiffError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


if __name__ == "__main__":
    main()
