"""Speed: sampler overhead against diffusers, training throughput against a plain PyTorch loop, and DPM-Solver++(2M)
against diffusers' DPMSolverMultistepScheduler on the trained digits model.

1. Per-step overhead (time outside the network) of each polydiff sampler and of diffusers' matching scheduler, with the
   digits U-Net's input at batch 64 (1x16x16). Measured twice: with a null network (``0.5 * x``, so the time *is* the
   overhead), and with the real U-Net (overhead = total - the same number of bare network calls).
2. Training steps per second of the polydiff LightningModule (ImageDiffusion, the digits recipe's network and objective,
   run by a Lightning Trainer without logger/checkpoints/progress bar) against a minimal hand-written loop with the same
   U-Net, data, batch, optimiser and loss. Runs alternate (A B A B ...) to share the machine's load fairly.
3. With a trained digits checkpoint (``--ckpt``): polydiff ``dpmpp_2m`` against diffusers' DPMSolverMultistepScheduler
   driving the same network (same guidance, classes, initial noise) at 10 and 20 steps: classifier-feature Fréchet
   distance on 1000 samples and wall time.

    .venv/bin/python benchmarks/speed.py                    # parts 1 and 2 (a few minutes)
    .venv/bin/python benchmarks/speed.py --ckpt runs/image/<run>/.../last.ckpt   # adds part 3

Writes the "speed" section of docs/benchmarks/samplers.md.
"""

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _doc import provenance, write_section  # noqa: E402

from polydiff.core.denoiser import NetworkDenoiser  # noqa: E402
from polydiff.core.processes import VPCosine  # noqa: E402
from polydiff.core.sampling import SamplerConfig, sample  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHAPE = (64, 1, 16, 16)
#: the digits recipe's network (recipes/image/digits.yaml)
UNET_KW = dict(image_size=16, in_channels=1, model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
               attention_resolutions=(4,), num_heads=4, dropout=0.1, num_classes=10)


class NullNet(nn.Module):
    """Costs (almost) nothing: whatever the loop spends is overhead."""

    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(()))

    def forward(self, x, c_noise, cond=None):
        return 0.5 * x


def make_unet() -> nn.Module:
    from polydiff.domains.image.unet import UNet

    torch.manual_seed(0)
    return UNet(**UNET_KW).eval()


# (polydiff sampler, diffusers scheduler factory kwargs)
PAIRS = {
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"solver_order": 2}),
    "dpmpp_2m_sde": ("DPMSolverMultistepScheduler", {"solver_order": 2, "algorithm_type": "sde-dpmsolver++"}),
    "dpmpp_3m": ("DPMSolverMultistepScheduler", {"solver_order": 3}),
    "unipc": ("UniPCMultistepScheduler", {"solver_order": 2}),
    "lms": ("LMSDiscreteScheduler", {}),
    "plms": ("PNDMScheduler", {"skip_prk_steps": True}),
    "deis_2": ("DEISMultistepScheduler", {"solver_order": 2}),
    "deis": ("DEISMultistepScheduler", {"solver_order": 3}),
}


def diffusers_loop(name: str, net: nn.Module, steps: int, cond, x_init: torch.Tensor) -> int:
    """A user's diffusers sampling loop (v-prediction, cosine betas); returns the number of network calls."""
    import diffusers

    cls_name, kw = PAIRS[name]
    sched = getattr(diffusers, cls_name)(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction", **kw)
    sched.set_timesteps(steps)
    # c_noise = -logsnr / 8 from the scheduler's own alphas_cumprod (a table lookup, as a diffusers model embeds t)
    lam_table = torch.log(sched.alphas_cumprod / (1 - sched.alphas_cumprod)).float()
    x = x_init * sched.init_noise_sigma
    gen = torch.Generator().manual_seed(0)
    calls = 0
    for t in sched.timesteps:
        x_in = sched.scale_model_input(x, t)
        c_noise = (-lam_table[int(t)] / 8).expand(x.shape[0])
        with torch.no_grad():
            out = net(x_in, c_noise, cond)
        calls += 1
        kw_step = {"generator": gen} if cls_name in ("DDPMScheduler", "DDIMScheduler") or "sde" in str(kw) else {}
        x = sched.step(out, t, x, **kw_step).prev_sample
    return calls


def polydiff_loop(name: str, net: nn.Module, steps: int, cond, x_init: torch.Tensor) -> int:
    den = NetworkDenoiser(net, VPCosine(), "v")
    calls = [0]
    fwd = net.forward

    def counted(*a, **k):
        calls[0] += 1
        return fwd(*a, **k)

    net.forward = counted
    try:
        sample(den, tuple(x_init.shape), SamplerConfig(name=name, steps=steps), cond=cond,
               generator=torch.Generator().manual_seed(0), x_init=x_init)
    finally:
        del net.forward
    return calls[0]


def _timed(fn, repeats: int) -> tuple[float, int]:
    times, calls = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        calls = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), calls


def overhead(steps: int, repeats: int, with_unet: bool, unet_samplers: tuple[str, ...]) -> list[dict]:
    x_init = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    cond = torch.arange(SHAPE[0]) % 10
    rows = []
    null = NullNet()
    unet = make_unet() if with_unet else None
    if unet is not None:
        c = torch.zeros(SHAPE[0])
        with torch.no_grad():
            unet(x_init, c, cond)
            t0 = time.perf_counter()
            for _ in range(10):
                unet(x_init, c, cond)
        t_net = (time.perf_counter() - t0) / 10
    loops = (("polydiff", polydiff_loop), ("diffusers", diffusers_loop))
    for name in PAIRS:
        row = {"sampler": name}
        for net, tag, reps in ((null, "null", repeats), (unet, "unet", max(1, repeats // 3))):
            if net is None or (tag == "unet" and name not in unet_samplers):
                continue
            times = {lib: [] for lib, _ in loops}
            for _lib, loop in loops:
                if tag == "null":
                    loop(name, net, steps, cond, x_init)  # warm-up
            for _ in range(reps):  # alternate the libraries so that both see the same machine load
                for lib, loop in loops:
                    t, calls = _timed(lambda: loop(name, net, steps, cond, x_init), 1)  # noqa: B023 - called at once
                    times[lib].append(t)
                    row[f"{lib}_calls"] = calls
            for lib, _ in loops:
                t, calls = statistics.median(times[lib]), row[f"{lib}_calls"]
                if tag == "null":
                    row[f"{lib}_null_ms"] = 1000 * t / calls
                else:
                    row[f"{lib}_unet_total_ms"] = 1000 * t / calls
                    row[f"{lib}_unet_over_ms"] = 1000 * (t - calls * t_net) / calls
        row["net_ms"] = 1000 * t_net if unet is not None else float("nan")
        rows.append(row)
        print(f"  {name:13s} null-net overhead/step: polydiff {row['polydiff_null_ms']:.3f} ms, diffusers "
              f"{row['diffusers_null_ms']:.3f} ms" + (f"; U-Net step {row['polydiff_unet_total_ms']:.1f} vs "
                                                     f"{row['diffusers_unet_total_ms']:.1f} ms"
                                                     if "polydiff_unet_total_ms" in row else ""), flush=True)
    return rows


# ------------------------------------------------------------------------------------------------ training throughput
def digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    from polydiff.datasets.digits import DigitsDataModule

    return DigitsDataModule().split_tensors("train")


def plain_loop_steps_per_s(x: torch.Tensor, y: torch.Tensor, steps: int, warmup: int) -> float:
    """The minimal hand-written loop: same U-Net, data order, batch, AdamW, v-loss on the cosine process with uniform t
    and 15 % condition dropout (the recipe's objective), written without polydiff."""
    from polydiff.domains.image.unet import UNet

    torch.manual_seed(0)
    net = UNet(**UNET_KW).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64, shuffle=True,
                                         drop_last=True, generator=torch.Generator().manual_seed(0))
    it, done, t0 = iter(loader), 0, None
    while done < steps + warmup:
        try:
            xb, yb = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        if done == warmup:
            t0 = time.perf_counter()
        t = torch.rand(xb.shape[0])
        alpha, sigma = torch.cos(math.pi * t / 2), torch.sin(math.pi * t / 2)
        a, s = alpha[:, None, None, None], sigma[:, None, None, None]
        eps = torch.randn_like(xb)
        x_t = a * xb + s * eps
        lam = (2 * torch.log(alpha / sigma)).clamp(-20, 20)
        yb = torch.where(torch.rand(xb.shape[0]) < 0.15, torch.full_like(yb, 10), yb)
        out = net(x_t, -lam / 8, yb)  # VP with sigma_data = 1: c_in = 1
        loss = ((out - (a * eps - s * xb)) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done += 1
    return steps / (time.perf_counter() - t0)


def polydiff_steps_per_s(x: torch.Tensor, y: torch.Tensor, steps: int, warmup: int) -> float:
    import lightning as L

    from polydiff.core.module import DiffusionConfig, ObjectiveConfig, TrainingConfig
    from polydiff.domains.image.module import ImageDiffusion

    class Clock(L.Callback):
        t0 = t1 = None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == warmup:
                self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == warmup + steps:
                self.t1 = time.perf_counter()

    torch.manual_seed(0)
    model = ImageDiffusion(image_size=16, channels=1, num_classes=10, model_channels=32, channel_mult=(1, 2, 2),
                           num_res_blocks=1, attention_resolutions=(4,), num_heads=4, dropout=0.1,
                           diffusion=DiffusionConfig(process="vp_cosine", prediction="v"),
                           objective=ObjectiveConfig(cond_dropout=0.15), training=TrainingConfig(lr=1e-3),
                           preview_every_n_epochs=0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64, shuffle=True,
                                         drop_last=True, generator=torch.Generator().manual_seed(0))
    clock = Clock()
    trainer = L.Trainer(max_steps=warmup + steps, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0, callbacks=[clock])
    trainer.fit(model, train_dataloaders=loader)
    return steps / (clock.t1 - clock.t0)


def throughput(steps: int, warmup: int, rounds: int) -> dict:
    x, y = digits_tensors()
    plain, ours = [], []
    for r in range(rounds):
        plain.append(plain_loop_steps_per_s(x, y, steps, warmup))
        ours.append(polydiff_steps_per_s(x, y, steps, warmup))
        print(f"  round {r}: plain {plain[-1]:.2f} steps/s, polydiff {ours[-1]:.2f} steps/s", flush=True)
    p, o = statistics.median(plain), statistics.median(ours)
    return {"plain": p, "polydiff": o, "ratio": o / p, "rounds": rounds, "steps": steps,
            "ratios": [b / a for a, b in zip(plain, ours)]}


# ------------------------------------------------------------------------------------------------ trained digits model
def digits_checkpoint(ckpt: str, steps_list=(10, 20), n: int = 1000, guidance: float = 2.0,
                      variants=("diffusers default grid",)) -> list[dict]:
    import diffusers

    from polydiff.datasets.digits import DigitsDataModule
    from polydiff.domains.image.metrics import ImageEvaluator
    from polydiff.domains.image.module import ImageDiffusion

    model = ImageDiffusion.load_from_checkpoint(ckpt, map_location="cpu").eval()
    dm = DigitsDataModule()
    ev = ImageEvaluator(*dm.split_tensors("train"), *dm.split_tensors("test"), 10)
    den = model.denoiser
    classes = torch.arange(n) % 10
    null = torch.full_like(classes, 10)
    z = torch.randn(n, 1, 16, 16, generator=torch.Generator().manual_seed(123), dtype=torch.float64)
    rows = []
    for steps in steps_list:
        t0 = time.perf_counter()
        with torch.no_grad():
            x = sample(den, (n, 1, 16, 16), SamplerConfig(name="dpmpp_2m", steps=steps, guidance=guidance),
                       cond=classes, null_cond=null, x_init=z)
        t_pd = time.perf_counter() - t0
        fd_pd = ev.report(x.float().clamp(-1, 1), classes)
        # diffusers: its own default grid for the cosine betas, and polydiff's grid injected (same sigmas)
        for variant in variants:
            sched = diffusers.DPMSolverMultistepScheduler(beta_schedule="squaredcos_cap_v2",
                                                          prediction_type="v_prediction", solver_order=2)
            sched.set_timesteps(steps)
            if variant == "polydiff's grid":
                from polydiff.core.grids import make_grid

                lam = make_grid(model.process, steps, "karras", "zero", 0.002, 80.0)
                sched.sigmas = torch.exp(-lam / 2).float()
                sched.timesteps = torch.arange(steps - 1, -1, -1)
            t0 = time.perf_counter()
            x = z.float() * float(1 / math.sqrt(1 + float(sched.sigmas[0]) ** 2) * float(sched.sigmas[0]))
            for t in sched.timesteps:
                if sched.step_index is None:
                    sched._init_step_index(t)
                sig = float(sched.sigmas[sched.step_index])
                lam_t = torch.full((n,), -2 * math.log(sig), dtype=torch.float64)
                with torch.no_grad():
                    v_c = den.network_output(x, lam_t, classes)
                    v_u = den.network_output(x, lam_t, null)
                v = v_u + guidance * (v_c - v_u)
                x = sched.step(v.float(), t, x).prev_sample
            t_df = time.perf_counter() - t0
            fd_df = ev.report(x.float().clamp(-1, 1), classes)
            rows.append({"steps": steps, "variant": variant, "pd_fd": fd_pd["fd"], "pd_acc": fd_pd["class_accuracy"],
                         "pd_s": t_pd, "df_fd": fd_df["fd"], "df_acc": fd_df["class_accuracy"], "df_s": t_df,
                         "floor": fd_pd["fd_floor"], "ceiling": fd_pd["fd_ceiling"]})
            print(f"  {steps} steps ({variant}): polydiff FD {fd_pd['fd']:.2f} ({t_pd:.1f}s) | diffusers FD "
                  f"{fd_df['fd']:.2f} ({t_df:.1f}s)", flush=True)
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20, help="sampler steps for the overhead measurement")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--no-unet", action="store_true", help="overhead with the null network only")
    ap.add_argument("--unet-samplers", default="dpmpp_2m,unipc", help="samplers also timed with the U-Net")
    ap.add_argument("--train-steps", type=int, default=40)
    ap.add_argument("--train-rounds", type=int, default=3)
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--skip-overhead", action="store_true")
    ap.add_argument("--ckpt", default=None, help="trained digits checkpoint for part 3")
    ap.add_argument("--digits-samples", type=int, default=1000)
    ap.add_argument("--same-grid", action="store_true", help="part 3 also runs diffusers on polydiff's sigmas")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "samplers.md"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    lines = ["## Speed", "", provenance(), ""]
    rows = []
    if not args.skip_overhead:
        print("1. sampler overhead per step (batch 64, 1x16x16)")
        rows = overhead(args.steps, args.repeats, not args.no_unet, tuple(args.unet_samplers.split(",")))
    if rows:
        lines += [f"### Per-step overhead, {args.steps} steps, batch {SHAPE[0]} × 1×16×16 (time outside the network)", "",
                  "Null network (`0.5 * x`): the loop's whole time per network call, i.e. the overhead itself. "
                  "polydiff includes its NetworkDenoiser (input scaling, parameterisation, float64 sampler arithmetic) "
                  "and the `sample()` driver; diffusers includes `set_timesteps`, `scale_model_input` and `step`. "
                  "Ratio = polydiff / diffusers (below 1: polydiff is faster); the libraries alternate run by run. "
                  "With the digits recipe's U-Net (bare forward "
                  + (f"{rows[0]['net_ms']:.0f} ms" if not args.no_unet else "not measured") + " at batch 64 on this "
                  "loaded machine) the whole time per network call is shown for the samplers in `--unet-samplers`: "
                  "there the overhead is below the run-to-run noise of the network itself.", "",
                  "| sampler | diffusers scheduler | polydiff ms (null) | diffusers ms (null) | ratio | "
                  "polydiff ms/call (U-Net) | diffusers ms/call (U-Net) |", "|---|---|---|---|---|---|---|"]
        for r in rows:
            cls, kw = PAIRS[r["sampler"]]
            u = (f"{r['polydiff_unet_total_ms']:.0f} | {r['diffusers_unet_total_ms']:.0f}"
                 if "polydiff_unet_total_ms" in r else "— | —")
            lines.append(f"| {r['sampler']} | {cls}{'(' + ', '.join(f'{k}={v}' for k, v in kw.items()) + ')' if kw else ''}"
                         f" | {r['polydiff_null_ms']:.3f} | {r['diffusers_null_ms']:.3f} | "
                         f"{r['polydiff_null_ms'] / r['diffusers_null_ms']:.2f} | {u} |")
        lines.append("")
    if not args.skip_train:
        print("2. training throughput")
        tp = throughput(args.train_steps, 5, args.train_rounds)
        lines += ["### Training throughput (digits U-Net, batch 64, AdamW)", "",
                  f"Median of {tp['rounds']} alternating rounds of {tp['steps']} steps after 5 warm-up steps.", "",
                  "| loop | steps/s |", "|---|---|",
                  f"| plain PyTorch loop | {tp['plain']:.2f} |",
                  f"| polydiff ImageDiffusion + Lightning Trainer | {tp['polydiff']:.2f} |",
                  f"| **ratio** (goal ≥ 0.9) | **{tp['ratio']:.2f}** (per round: "
                  + ", ".join(f"{v:.2f}" for v in tp["ratios"]) + ") |", ""]
    if rows or not args.skip_train:
        write_section(args.out, "speed", "\n".join(lines), title="# Samplers: accuracy and speed")
    if args.ckpt:
        print("3. trained digits model")
        dr = digits_checkpoint(args.ckpt, n=args.digits_samples, variants=("diffusers default grid",)
                               + (("polydiff's grid",) if args.same_grid else ()))
        lines = ["### DPM-Solver++(2M) on the trained digits model: polydiff vs diffusers", "",
                  f"Checkpoint `{args.ckpt}`; {args.digits_samples} class-conditional samples (classes 0..9 in turn), "
                  "guidance 2, "
                  "same initial noise; classifier-feature Fréchet distance to the test split (floor: train split "
                  f"{dr[0]['floor']:.2f}, ceiling: noise {dr[0]['ceiling']:.1f}) and class accuracy.", "",
                  "| steps | diffusers grid | polydiff FD | polydiff acc. | polydiff s | diffusers FD | diffusers acc. | "
                  "diffusers s |", "|---|---|---|---|---|---|---|---|"]
        for r in dr:
            lines.append(f"| {r['steps']} | {r['variant']} | {r['pd_fd']:.2f} | {100 * r['pd_acc']:.1f} % | "
                         f"{r['pd_s']:.1f} | {r['df_fd']:.2f} | {100 * r['df_acc']:.1f} % | {r['df_s']:.1f} |")
        lines += ["", provenance(), ""]
        write_section(args.out, "speed-digits", "\n".join(lines), title="# Samplers: accuracy and speed")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
