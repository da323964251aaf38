"""Few-step generation on digits: the teacher's best sampler at 1, 2, 4, 8 and 20 network evaluations against the
few-step students (consistency distillation, progressive distillation, reflow, the denoising diffusion GAN) at 1, 2
and 4, in one table; the straightness of reflow's paths before and after, on the 2D toy and on digits.

    python benchmarks/fewstep_digits.py --teacher runs/image/digits/lightning_logs/version_0/checkpoints/last.ckpt \
        --student "consistency distillation=consistency:<CD last.ckpt>" \
        --student "progressive distillation=ddim:<run>/checkpoints/progressive_{steps}steps.ckpt" \
        --student "2-rectified flow (reflow)=ddim:<reflow last.ckpt>" \
        --student "denoising diffusion GAN=ddpm:<DD-GAN last.ckpt>"

    # one more student into the existing table (same seeds and sample counts; the controls are measured again, the
    # teacher's rows and the other students' are kept): --merge
    python benchmarks/fewstep_digits.py --merge --teacher <the same teacher> --student "denoising diffusion GAN=ddpm:<ckpt>"

A student is LABEL=SAMPLER:PATH; ``{steps}`` in the path is replaced by the number of steps (progressive distillation
writes one checkpoint per round). Every row: 1000 samples (classes 0-9 in turn, seed 0), scored by the image domain's
evaluator (:class:`polydiff.domains.image.metrics.ImageEvaluator`: classifier-feature FD to the test split with its
floor and ceiling, class accuracy) and the classifier "inception score" ``exp(E_x KL(p(y|x) || p(y)))``. Network
evaluations count forward passes: a guided step costs two, so the teacher is tried unguided (steps = NFE) and guided
(steps = NFE / 2) with DDIM, DPM-Solver++ 2M and UniPC-1 on the Karras and uniform-t grids up to 4 evaluations (from 8
on with the recipe's DPM-Solver++ 2M on the Karras grid), and its best row (lowest FD) is kept. Students run unguided (they
learned the guided teacher). Controls measured in the same run: the train split (FD floor, inception score of real
digits) and noise images (ceiling). The table goes into the ``fewstep`` section of
``docs/benchmarks/fewstep.md`` (``benchmarks/collect.py`` puts it in ``docs/benchmarks.md``).
"""

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _doc import provenance, write_section  # noqa: E402

TEACHER_SAMPLERS = ("ddim", "dpmpp_2m", "unipc_1")
TEACHER_GRIDS = ("karras", "uniform_t")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", required=True, help="the digits teacher checkpoint")
    p.add_argument("--student", action="append", default=[], help="LABEL=SAMPLER:PATH ({steps} in PATH: per steps)")
    p.add_argument("--teacher_nfe", default="1,2,4,8,20")
    p.add_argument("--student_steps", default="1,2,4")
    p.add_argument("--num_samples", type=int, default=1000)
    p.add_argument("--straightness_samples", type=int, default=250)
    p.add_argument("--toy_steps", type=int, default=2000, help="training steps of each 2D toy flow")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "fewstep.md"))
    p.add_argument("--notes", default="", help="extra markdown under the heading (e.g. training times)")
    p.add_argument("--merge", action="store_true",
                   help="evaluate only the --student models and merge their rows into the existing section (rows and "
                        "acceptance lines of the same labels are replaced); the teacher's best is read from the table")
    return p.parse_args()


def inception_score(logits: torch.Tensor) -> float:
    """``exp(E_x KL(p(y|x) || p(y)))`` with ``p(y)`` the mean of ``p(y|x)`` (Salimans et al. 2016), from the
    evaluation classifier's logits: 1 when every image gets the same class distribution, the number of classes for
    confident, balanced predictions."""
    logp = torch.log_softmax(logits.double(), 1)
    log_py = torch.logsumexp(logp, 0) - torch.log(torch.tensor(float(len(logp)), dtype=torch.float64))
    kl = (logp.exp() * (logp - log_py)).sum(1)
    return float(kl.mean().exp())


def score(ev, images: torch.Tensor, classes: torch.Tensor | None) -> dict[str, float]:
    """Evaluator metrics plus the inception score of ``images`` in [-1, 1]."""
    from polydiff.domains.image.metrics import predict

    r = ev.report(images, classes)
    r["inception_score"] = inception_score(predict(ev.net, images)[1])
    return r


def load(path: str):
    from polydiff.domains.image import ImageDiffusion

    model = ImageDiffusion.load_from_checkpoint(path, map_location="cpu")
    return model.eval()


def run(model, n: int, name: str, steps: int, guidance: float, grid: str) -> tuple[torch.Tensor, float]:
    from dataclasses import replace

    cfg = replace(model.sampler_config, name=name, steps=steps, guidance=guidance, grid=grid)
    t0 = time.time()
    imgs = model.sample_images(n, torch.arange(n) % model.num_classes, sampler=cfg, seed=0)
    return imgs * 2 - 1, time.time() - t0


def row(label: str, sampler: str, nfe: int, r: dict[str, float], secs: float) -> str:
    return (f"| {label} | {sampler} | {nfe} | {r['fd']:.1f} | {r['fd_relative']:.3f} | "
            f"{100 * r.get('class_accuracy', float('nan')):.1f} % | {r['inception_score']:.2f} | {secs:.0f} |")


def students(args: argparse.Namespace, ev, best: dict[int, float]) -> tuple[list[str], list[str]]:
    """Table rows and acceptance lines of every ``--student`` at each of ``--student_steps`` (unguided, uniform-t
    grid), against the teacher's best FD ``best`` at the same number of evaluations."""
    n, lines, checks = args.num_samples, [], []
    for spec in args.student:
        label, _, rest = spec.partition("=")
        sampler, _, path = rest.partition(":")
        for steps in [int(v) for v in args.student_steps.split(",")]:
            p = path.replace("{steps}", str(steps))
            if not Path(p).is_file():
                print(f"{label}: no checkpoint {p}; row skipped", flush=True)
                continue
            model = load(p)
            imgs, secs = run(model, n, sampler, steps, 1.0, "uniform_t")
            r = score(ev, imgs, torch.arange(n) % 10)
            lines.append(row(label, f"{sampler} uniform_t ({steps}, 1)", steps, r, secs))
            print(lines[-1], flush=True)
            beats = steps in best and r["fd"] < best[steps]
            both = r["class_accuracy"] >= 0.9 and r["fd_relative"] <= 0.2
            checks.append(f"- {label} at {steps} evaluation(s): FD {r['fd']:.1f} vs the teacher's best "
                          f"{best.get(steps, float('nan')):.1f}: {'beats it' if beats else 'does not beat it'}; "
                          f"class accuracy {100 * r['class_accuracy']:.1f} %, fd_relative {r['fd_relative']:.3f}"
                          f"{' (meets >= 90 % and <= 0.2)' if both else ''}")
    return lines, checks


def merge(args: argparse.Namespace, ev, controls: list[str]) -> None:
    """``--merge``: the ``--student`` rows into the existing ``fewstep`` section of ``--out``. The controls are measured
    again and must match the table's (same data, same evaluator); the teacher's best FD per number of evaluations is
    read from its rows; rows and acceptance lines whose label is a merged student's are replaced."""
    import re

    from _doc import command_line

    text = Path(args.out).read_text()
    begin, end = "<!-- fewstep:begin -->", "<!-- fewstep:end -->"
    if begin not in text or end not in text:
        raise SystemExit(f"{args.out} has no fewstep section to merge into; run the benchmark without --merge first")
    section = text.split(begin, 1)[1].split(end, 1)[0].strip("\n").splitlines()
    for c in controls:  # same seeds and data: the controls must come out as in the table
        if c.rsplit("|", 2)[0] not in "\n".join(section):
            raise SystemExit(f"control row differs from the table's: {c}; rerun the whole benchmark instead")
    best = {int(m.group(1)): float(m.group(2)) for ln in section
            if (m := re.match(r"\| teacher, best sampler \| [^|]+ \| (\d+) \| ([\d.]+) \|", ln))}
    rows, checks = students(args, ev, best)
    labels = {spec.partition("=")[0] for spec in args.student}
    keep = [ln for ln in section if not any(ln.startswith((f"| {lab} |", f"- {lab} at ")) for lab in labels)]
    # an earlier merge of the same students: its note goes too (with the blank line after it)
    old = [i for i, ln in enumerate(keep) if ln.startswith(f"Rows of {', '.join(sorted(labels))} merged in with ")]
    keep = [ln for i, ln in enumerate(keep) if i not in old and i - 1 not in old]
    last_row = max(i for i, ln in enumerate(keep) if ln.startswith("| ") and ln.count("|") == 9)
    keep[last_row + 1:last_row + 1] = rows
    last_check = max(i for i, ln in enumerate(keep) if re.match(r"- .+ at \d+ evaluation\(s\): ", ln))
    keep[last_check + 1:last_check + 1] = checks
    head = next(i for i, ln in enumerate(keep) if ln.startswith("Measured "))
    note = (f"Rows of {', '.join(sorted(labels))} merged in with `{command_line()}` "
            f"({provenance().split(' with ')[0].removeprefix('Measured ')}): same seeds and sample counts, controls "
            "measured again and equal to the rows above." + (f" {args.notes}" if args.notes else ""))
    keep[head + 1:head + 1] = ["", note]
    write_section(args.out, "fewstep", "\n".join(keep))
    print(f"merged {len(rows)} rows into {args.out}")


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    from polydiff.core.fewstep import straightness
    from polydiff.core.guidance import ClassifierFreeGuidance
    from polydiff.datasets.digits import DigitsDataModule
    from polydiff.domains.image.metrics import ImageEvaluator, noise_images

    dm = DigitsDataModule()
    tx, ty = dm.split_tensors("train")
    vx, vy = dm.split_tensors("test")
    ev = ImageEvaluator(tx, ty, vx, vy, 10)
    n = args.num_samples
    head = ("| model | sampler, grid (steps, guidance) | network evaluations | FD | (FD - floor) / (ceiling - floor) | "
            "class accuracy | inception score | seconds |\n|---|---|---|---|---|---|---|---|")
    lines = [head, row("control: real digits (train split)", "-", 0, score(ev, tx, ty), 0),
             row("control: noise images", "-", 0, score(ev, noise_images(tx, n), None), 0)]
    print("\n".join(lines), flush=True)
    if args.merge:
        return merge(args, ev, lines[1:])
    best: dict[int, float] = {}
    teacher = load(args.teacher)
    for nfe in [int(v) for v in args.teacher_nfe.split(",")]:
        found = None
        for guidance in (1.0, teacher.sampler_config.guidance):
            steps = nfe if guidance == 1.0 else nfe // 2
            if steps < 1 or (guidance != 1.0 and nfe % 2):
                continue
            # from 8 evaluations on, the recipe's sampler and grid (DPM-Solver++ 2M, Karras) lead (docs/benchmarks/image.md)
            for name in TEACHER_SAMPLERS if nfe <= 4 else ("dpmpp_2m",):
                for grid in TEACHER_GRIDS if nfe <= 4 else TEACHER_GRIDS[:1]:
                    imgs, secs = run(teacher, n, name, steps, guidance, grid)
                    r = score(ev, imgs, torch.arange(n) % 10)
                    print(f"teacher {name} {grid} {steps} steps guidance {guidance}: NFE {nfe} FD {r['fd']:.1f} acc "
                          f"{r['class_accuracy']:.3f} IS {r['inception_score']:.2f}", flush=True)
                    if found is None or r["fd"] < found[0]["fd"]:
                        found = (r, f"{name} {grid} ({steps}, {guidance:g})", secs)
        best[nfe] = found[0]["fd"]
        lines.append(row("teacher, best sampler", found[1], nfe, found[0], found[2]))
        print(lines[-1], flush=True)
    rows, checks = students(args, ev, best)
    lines += rows

    # straightness: the teacher (1-rectified flow in flow coordinates, with its guidance) and the reflow student
    straight = ["| model | straightness (per element) | 1-step FD |", "|---|---|---|"]
    noise = torch.randn((args.straightness_samples, 1, 16, 16), generator=torch.Generator().manual_seed(7))
    cond = torch.arange(args.straightness_samples) % 10
    reflow = [s for s in args.student if "reflow" in s.lower()
              and Path(s.partition("=")[2].partition(":")[2].replace("{steps}", "1")).is_file()]
    models = [("teacher (1-rectified flow), guidance %g" % teacher.sampler_config.guidance, teacher,
               teacher.sampler_config.guidance)]
    if reflow:
        models.append(("2-rectified flow (reflow student), guidance 1",
                       load(reflow[0].partition("=")[2].partition(":")[2].replace("{steps}", "1")), 1.0))
    for label, model, g in models:
        den = model.denoiser if g == 1.0 else ClassifierFreeGuidance(model.denoiser, g, model.null_condition(cond))
        s, _ = straightness(den, noise, cond, steps=32)
        imgs, _ = run(model, n, "ddim", 1, g if g == 1.0 else 1.0, "uniform_t")
        straight.append(f"| {label} | {s:.4f} | {score(ev, imgs, torch.arange(n) % 10)['fd']:.1f} |")
        print(straight[-1], flush=True)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _reflow_toy import run_toy

    toy = run_toy(steps=args.toy_steps)
    toy_lines = ["| 2D toy | straightness | 1-step error vs own ODE | 1-step distance to nearest mode |",
                 "|---|---|---|---|"]
    toy_lines += [f"| {k} | {v['straightness']:.4f} | {v['one_step_error']:.3f} | {v['one_step_mode_distance']:.3f} |"
                  for k, v in toy.items()]
    print("\n".join(toy_lines), flush=True)

    text = ["## Few-step generation: digits (issue 17)", "", provenance(), "", args.notes, "",
            f"Teacher `{args.teacher}`; {n} samples per row (classes 0-9 in turn, seed 0); FD to the test split with "
            f"floor {ev.fd_floor:.1f} (train vs test) and ceiling {ev.fd_ceiling:.1f} (noise); evaluation classifier "
            f"{100 * ev.classifier_test_accuracy:.1f} % on real test digits. Network evaluations count forward passes "
            "(a guided step is two).", "", *lines, "", "Acceptance (students against the teacher's best at the same "
            "evaluations):", *checks, "", "### Reflow: straightness (Liu et al. 2022) of the ODE paths", "",
            "Digits (flow coordinates, 32 Euler steps uniform in flow time, "
            f"{args.straightness_samples} paths; 1-step FD with DDIM):", "", *straight, "",
            f"2D toy (noise to two Gaussians, `benchmarks/_reflow_toy.py`, {args.toy_steps} training steps each):",
            "", *toy_lines]
    write_section(args.out, "fewstep", "\n".join(text))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
