"""Exact-score sampler benchmark: polydiff against diffusers and k-diffusion on Gaussian mixtures.

Every sampler of every library is driven by the same closed-form denoiser ``E[x0 | x_t]`` (benchmarks/_gmm.py), on the
same Karras grid (sigma 80 -> 0.002 -> 0, rho = 7), from the same initial noise, at the same budget of network
evaluations (NFE, counted by the denoiser; Heun-type samplers use the largest step count that fits, 2 n - 1 <= NFE).

Measured per target and NFE:
* end-point error of deterministic samplers: RMS difference to the probability-flow ODE solution from the same noise,
  divided by the data's standard deviation. The reference is classical RK4 in ``u = ln sigma`` on
  ``dx/du = x - D(x, sigma)`` with thousands of steps down to sigma_min, followed by the same final step
  ``x0 = D(x, sigma_min)`` every sampler takes; its own error (RK4 with half the steps, Richardson) is printed.
* sliced Wasserstein-2 distance (512 directions) of all samplers' end points to fresh samples of the mixture; its noise
  floor (two independent sample sets of the same size) is printed with it.

Every deterministic sampler of both peers is in (k-diffusion: euler, heun, dpm_2, lms, dpm_fast, dpm_adaptive at its
measured NFE over a sweep of tolerances, dpmpp_2m, dpmpp_3m_sde with eta = 0; diffusers: DDIM, Euler, Heun, LMSDiscrete,
PNDM (PLMS), DEISMultistep 2/3, DPMSolverMultistep 2M/3M, DPMSolverSinglestep 2S/3S, UniPC bh1/bh2 2/3), and the lead is
reported per (target, NFE) for every budget from 4 to 20.

    .venv/bin/python benchmarks/samplers.py            # 512 samples, NFE 4..20, six targets (~20 min on one core)
    .venv/bin/python benchmarks/samplers.py --full     # 1024 samples, NFE 4..20, 30, 50, a seventh target, finer reference

Writes docs/benchmarks/samplers.md (section "accuracy") and docs/benchmarks/samplers_error_vs_nfe.png.
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _doc import provenance, write_section  # noqa: E402
from _gmm import GaussianMixture, MixtureDenoiser, targets  # noqa: E402

from polydiff.core.grids import make_grid  # noqa: E402
from polydiff.core.processes import VarianceExploding  # noqa: E402
from polydiff.core.samplers import SAMPLERS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NFES = tuple(range(4, 21))  # every budget from 4 to 20 evaluations (the range); --full adds 30 and 50
FULL_NFES = NFES + (30, 50)
TIE = 1e-3  # relative difference below which two libraries' best errors count as equal
SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 80.0, 7.0

#: polydiff entries: label -> (SAMPLERS key, options, deterministic); "(min)": the grid ends at sigma_min (no final
#: x0 step), as SamplerConfig(final_step="min") does
POLYDIFF = {
    "ddim": ("ddim", {}, True),
    "euler": ("euler", {}, True),
    "heun": ("heun", {}, True),
    "dpmpp_2m": ("dpmpp_2m", {}, True),
    "dpmpp_3m": ("dpmpp_3m", {}, True),
    "dpmpp_3m_unic": ("dpmpp_3m_unic", {}, True),
    "unipc_1": ("unipc_1", {}, True),
    "unipc": ("unipc", {}, True),
    "unipc_3": ("unipc_3", {}, True),
    "lms": ("lms", {}, True),
    "plms": ("plms", {}, True),
    "deis": ("deis", {}, True),
    "deis_2": ("deis_2", {}, True),
    "deis_pc": ("deis_pc", {}, True),
    "dpm_fast": ("dpm_fast", {}, True),
    "dpm_fast(min)": ("dpm_fast", {}, True),
    "ddpm": ("ddpm", {}, False),
    "dpmpp_2m_sde": ("dpmpp_2m_sde", {}, False),
    "dpmpp_3m_sde": ("dpmpp_3m_sde", {}, False),
}


def karras_grid(steps: int, kind: str = "karras") -> tuple[torch.Tensor, np.ndarray]:
    """polydiff's grid (log-SNR) and the same grid as VE sigmas ending in 0 for the other libraries."""
    lam = make_grid(VarianceExploding(), steps, kind, "zero", SIGMA_MIN, SIGMA_MAX, RHO)
    sig = torch.exp(-lam / 2).numpy()
    return lam, sig


#: the reference integrates down to this noise level and then takes x0 = D(x, sigma): the remaining error,
#: O(REF_SIGMA_END^2), is far below every sampler's (which stop at SIGMA_MIN = 0.002 before their last step)
REF_SIGMA_END = 1e-5


def reference(gmm: GaussianMixture, z: torch.Tensor, steps: int) -> torch.Tensor:
    """PF-ODE end point by RK4 in u = ln sigma from SIGMA_MAX to REF_SIGMA_END, then x0 = D(x, REF_SIGMA_END)."""
    u = torch.linspace(math.log(SIGMA_MAX), math.log(REF_SIGMA_END), steps + 1, dtype=torch.float64)
    x = z * SIGMA_MAX

    def f(x, uu):
        return x - gmm.denoise(x, torch.exp(uu))

    for i in range(steps):
        h = u[i + 1] - u[i]
        k1 = f(x, u[i])
        k2 = f(x + h / 2 * k1, u[i] + h / 2)
        k3 = f(x + h / 2 * k2, u[i] + h / 2)
        k4 = f(x + h * k3, u[i + 1])
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return gmm.denoise(x, torch.tensor(REF_SIGMA_END, dtype=torch.float64))


def sliced_w2(a: torch.Tensor, b: torch.Tensor, directions: torch.Tensor) -> float:
    pa, pb = (a @ directions).sort(0).values, (b @ directions).sort(0).values
    return float(((pa - pb) ** 2).mean().sqrt())


def run_polydiff(label: str, gmm: GaussianMixture, lam: torch.Tensor, z: torch.Tensor, gen: torch.Generator):
    key, opts, _ = POLYDIFF[label]
    model = MixtureDenoiser(gmm, VarianceExploding())
    fn = SAMPLERS[key]
    if label.endswith("(min)"):
        lam = make_grid(VarianceExploding(), len(lam) - 1, "karras", "min", SIGMA_MIN, SIGMA_MAX, RHO)
    x = fn(model, z * SIGMA_MAX, lam, generator=gen, **opts)
    return x, model.calls


def steps_for(label: str, nfe: int) -> int:
    """Grid intervals that use at most ``nfe`` evaluations: 2 per step for Heun / DPM-2 (1 on the step to zero); PLMS
    spends one more evaluation than it has intervals (its first step is a Heun-like step)."""
    if label.lower() in ("heun", "dpm_2"):
        return max(1, (nfe + 1) // 2)
    if label.startswith("PNDM") or label == "plms":
        return max(1, nfe - 1)
    return nfe


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", action="store_true", help="more samples, a fifth target, finer reference")
    ap.add_argument("--samples", type=int, default=None, help="samples per target (default 512; full: 1024)")
    ap.add_argument("--no-libs", action="store_true", help="polydiff only (diffusers / k-diffusion not installed)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "samplers.md"))
    ap.add_argument("--results", default=str(ROOT / "runs" / "bench" / "samplers_results.json"),
                    help="raw results are saved here; --report-only rewrites the report from them")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--nfes", default=None, help="comma-separated budgets instead of the default (a smoke run)")
    ap.add_argument("--targets", default=None, help="comma-separated target names instead of all")
    args = ap.parse_args(argv)
    if args.report_only:
        saved = json.loads(Path(args.results).read_text())
        write_report(saved["results"], saved["notes"], args, saved["provenance"])
        return saved
    torch.set_num_threads(1)
    n = args.samples or (1024 if args.full else 512)
    ref_steps = 1000 if args.full else 400
    nfes = [int(v) for v in args.nfes.split(",")] if args.nfes else (FULL_NFES if args.full else NFES)
    entries: dict[str, tuple[str, bool]] = {f"polydiff:{k}": ("polydiff", v[2]) for k, v in POLYDIFF.items()}
    if not args.no_libs:
        from _libs import ADAPTIVE_TOLS, diffusers_schedulers, k_samplers, run_diffusers, run_k, run_k_adaptive

        entries.update({f"diffusers:{k}": ("diffusers", v[1]) for k, v in diffusers_schedulers().items()})
        entries.update({f"k-diffusion:{k}": ("k-diffusion", v[2]) for k, v in k_samplers().items()})
    results = []  # dicts: target, entry, nfe_budget, nfe, err, sw
    notes = []
    for ti, gmm in enumerate(targets(args.full)):
        if args.targets and gmm.name not in args.targets.split(","):
            continue
        t0 = time.time()
        z = torch.randn(n, gmm.dim, generator=torch.Generator().manual_seed(100 + ti), dtype=torch.float64)
        ref = reference(gmm, z, ref_steps)
        ref_half = reference(gmm, z, ref_steps // 2)
        std = gmm.std()
        ref_err = float((ref - ref_half).pow(2).mean().sqrt()) / 15 / std  # Richardson estimate for RK4
        dirs = torch.randn(gmm.dim, 512, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
        dirs = dirs / dirs.norm(dim=0, keepdim=True)
        true = gmm.sample(n, torch.Generator().manual_seed(200 + ti))
        floor = np.mean([sliced_w2(gmm.sample(n, torch.Generator().manual_seed(300 + ti * 10 + j)), true, dirs)
                         for j in range(3)])
        sw_ref = sliced_w2(ref, true, dirs)
        notes.append((gmm.name, gmm.dim, std, ref_err, floor, sw_ref))
        print(f"[{gmm.name}] d={gmm.dim} std={std:.3f} reference error ~{ref_err:.1e} (rel.), SW floor {floor:.4f}, "
              f"SW(ODE limit) {sw_ref:.4f}  ({time.time() - t0:.0f}s)", flush=True)
        adaptive = []  # k-diffusion's DPM-Solver-23 at each tolerance: (measured NFE, error, SW, tolerances)
        if not args.no_libs:
            for rtol, atol in ADAPTIVE_TOLS:
                x, calls = run_k_adaptive(gmm, SIGMA_MIN, SIGMA_MAX, z, rtol, atol)
                ok = bool(torch.isfinite(x).all())
                adaptive.append((calls, float((x - ref).pow(2).mean().sqrt()) / std if ok else float("inf"),
                                 sliced_w2(x, true, dirs) if ok else float("inf"), f"rtol {rtol}, atol {atol}"))
            print("  dpm_adaptive (NFE, error): " + ", ".join(f"({c}, {e:.2e})" for c, e, _, _ in adaptive), flush=True)
        for nfe in nfes:
            # the adaptive solver counts at every budget its measured NFE fits (its best run within the budget)
            fits = [a for a in adaptive if a[0] <= nfe]
            if adaptive:
                b = min(fits, key=lambda a: a[1]) if fits else (None, float("nan"), float("nan"), "")
                results.append(dict(target=gmm.name, entry="k-diffusion:dpm_adaptive", lib="k-diffusion", det=True,
                                    budget=nfe, nfe=b[0], err=b[1], sw=b[2], note=b[3]))
            for entry, (lib, det) in entries.items():
                label = entry.split(":", 1)[1]
                steps = steps_for(label, nfe)
                lam, sig = karras_grid(steps)
                gen = torch.Generator().manual_seed(1000 + nfe)
                if lib == "polydiff":
                    x, calls = run_polydiff(label, gmm, lam, z, gen)
                elif lib == "diffusers":
                    x, calls = run_diffusers(label, gmm, sig, z, gen)
                else:
                    x, calls = run_k(label, gmm, sig, z, gen)
                x = x.double()
                err = float((x - ref).pow(2).mean().sqrt()) / std if det else float("nan")
                if not torch.isfinite(x).all():
                    err = float("inf")
                results.append(dict(target=gmm.name, entry=entry, lib=lib, det=det, budget=nfe, nfe=calls, err=err,
                                    sw=sliced_w2(x, true, dirs) if torch.isfinite(x).all() else float("inf")))
            best = {lib: _best(results, gmm.name, nfe, lib) for lib in ("polydiff", "diffusers", "k-diffusion")}
            print(f"  NFE {nfe:2d}: " + "  ".join(f"{lib} {b['entry'].split(':')[1]} {b['err']:.2e}"
                                                  for lib, b in best.items() if b), flush=True)
    saved = {"results": results, "notes": notes, "provenance": provenance()}
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(saved, default=float))
    write_report(results, notes, args, saved["provenance"])
    return saved


def _best(results: list[dict], target: str, nfe: int, lib: str) -> dict | None:
    """The most accurate deterministic run of ``lib`` at this budget (runs without a result, NaN, left out)."""
    rs = [r for r in results if r["target"] == target and r["budget"] == nfe and r["det"] and r["lib"] == lib
          and r["err"] == r["err"]]
    return min(rs, key=lambda r: r["err"]) if rs else None


def _fmt(v: float) -> str:
    return "—" if v != v else ("inf" if math.isinf(v) else f"{v:.2e}")


#: the budget bands of the recommendation table
BANDS = ((4, 5), (6, 8), (9, 12), (13, 20), (21, 50))
#: NFE columns of the per-sampler tables (all budgets are in the saved JSON)
TABLE_NFES = (4, 5, 6, 8, 10, 12, 15, 20, 30, 50)


def lead_verdict(pd_err: float, peer_err: float) -> str:
    """``yes (ratio)``, ``tie`` (within TIE: the same algorithm in two libraries) or ``**no**: +x%``."""
    if abs(pd_err / peer_err - 1) <= TIE:
        return f"tie (same algorithm; {100 * (pd_err / peer_err - 1):+.3f}%)"
    if pd_err < peer_err:
        return f"yes ({peer_err / pd_err:.3f}×)"
    return f"**no**: +{100 * (pd_err / peer_err - 1):.2f}%"


def recommendation(results: list[dict], tnames: list[str], nfes: list[int]) -> list[str]:
    """Per budget band, the polydiff sampler with the smallest geometric-mean excess error over the best polydiff
    sampler, across every target and budget of the band (and its worst case)."""
    pd = sorted({r["entry"] for r in results if r["lib"] == "polydiff" and r["det"]})
    lines = ["### Which polydiff sampler at which budget", "",
             "Excess = error / error of the best polydiff sampler at the same (target, NFE); geometric mean and worst "
             "case over every target and budget of the band. Runner-up in brackets.", "",
             "| NFE | recommended | geo-mean excess | worst excess | runner-up |", "|---|---|---|---|---|"]
    for lo, hi in BANDS:
        cells = [(t, n) for t in tnames for n in nfes if lo <= n <= hi]
        if not cells:
            continue
        score = {}
        for e in pd:
            ratios = []
            for t, n in cells:
                best = _best(results, t, n, "polydiff")
                r = next((r for r in results if r["target"] == t and r["budget"] == n and r["entry"] == e), None)
                if best is None or r is None or not math.isfinite(r["err"]):
                    ratios.append(float("inf"))
                else:
                    ratios.append(r["err"] / best["err"])
            score[e] = (math.exp(sum(math.log(v) for v in ratios) / len(ratios)) if all(map(math.isfinite, ratios))
                        else float("inf"), max(ratios))
        ranked = sorted(score, key=lambda e: score[e][0])
        first, second = ranked[0], ranked[1]
        lines.append(f"| {lo}-{hi} | `{first.split(':')[1]}` | {score[first][0]:.3f} | {score[first][1]:.3f} | "
                     f"`{second.split(':')[1]}` ({score[second][0]:.3f}) |")
    return lines + [""]


def write_report(results: list[dict], notes: list, args, prov: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tnames = [t[0] for t in notes]
    nfes = sorted({r["budget"] for r in results})
    libs = sorted({r["lib"] for r in results}, key=["polydiff", "diffusers", "k-diffusion"].index)
    full = getattr(args, "full", False)
    lines = ["## Sampler accuracy with an exact score" + (" (full run)" if full else ""), "", prov, ""]
    lines += [
        "Same closed-form mixture denoiser, Karras grid (sigma 80 → 0.002 → 0, rho 7), initial noise and NFE for every "
        "library. *Error* = RMS distance of the end point to the probability-flow ODE solution from the same noise "
        "(RK4 reference), relative to the data's standard deviation. NFE is counted at the denoiser; Heun / DPM-2 use "
        "2n−1 ≤ NFE evaluations (so at even budgets they get one fewer), PLMS n + 1 for n intervals. Samplers that "
        "place their own steps (DPM-Solver-fast in both libraries, k-diffusion's adaptive DPM-Solver-23) use the same "
        "range sigma 80 → 0.002; `(min)` / without `+x0` they stop there, otherwise the last evaluation is "
        "x0 = D(x, 0.002), as on the Karras grid. The adaptive solver is swept over tolerances and counts at every "
        "budget its measured NFE fits. *SW* = sliced Wasserstein-2 to fresh mixture samples (512 directions).", "",
        "| target | dim | data std | reference error (rel.) | SW noise floor | SW of the exact ODE end points |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {t} | {d} | {s:.3f} | {e:.1e} | {f:.4f} | {w:.4f} |" for t, d, s, e, f, w in notes]
    lines += ["", "### Does polydiff lead? (best deterministic sampler per library, error relative to data std)", ""]
    head = "| target | NFE | " + " | ".join(f"best {lib}" for lib in libs) + " | polydiff leads? |"
    lines += [head, "|" + "---|" * (3 + len(libs))]
    verdicts = []
    for t in tnames:
        for nfe in nfes:
            best = {lib: _best(results, t, nfe, lib) for lib in libs}
            cells = [f"{_fmt(b['err'])} ({b['entry'].split(':')[1]})" if b else "—" for b in best.values()]
            others = [b["err"] for lib, b in best.items() if lib != "polydiff" and b]
            verdict = lead_verdict(best["polydiff"]["err"], min(others)) if others else "n/a"
            if 4 <= nfe <= 20:
                verdicts.append((t, nfe, verdict))
            lines.append(f"| {t} | {nfe} | " + " | ".join(cells) + f" | {verdict} |")
    n_yes = sum(v[2].startswith("yes") for v in verdicts)
    n_tie = sum(v[2].startswith("tie") for v in verdicts)
    behind = [f"{t} at NFE {nfe} ({v.split(': ')[1]})" for t, nfe, v in verdicts if v.startswith("**no")]
    lines += ["", f"For 4 ≤ NFE ≤ 20, polydiff's best deterministic sampler is at least as good as the best peer at "
              f"{n_yes + n_tie} of {len(verdicts)} (target, NFE) pairs: it leads at {n_yes}, ties at {n_tie} and "
              f"is behind at {len(behind)}" + (": " + "; ".join(behind) if behind else "") + ". "
              "Ratio = best competitor error / polydiff error; a tie is within ±0.1 % (the same algorithm in two "
              "libraries: polydiff's `lms`, `plms`, `deis` and `dpm_fast` match k-diffusion's / diffusers' to 1e-8 "
              "on the same grid, tests/test_samplers_multistep.py).", ""]
    lines += recommendation(results, tnames, nfes)
    shown = [n for n in TABLE_NFES if n in nfes]
    lines += ["### Every sampler: end-point error (deterministic) and SW (all)", "",
              f"Budgets {', '.join(map(str, shown))} (every budget is in the saved results, `--results`).", ""]
    entries = list(dict.fromkeys(r["entry"] for r in results))
    for t in tnames:
        lines += [f"**{t}**", "", "| sampler | " + " | ".join(f"NFE {n}" for n in shown) + " |",
                  "|---|" + "---|" * len(shown)]
        for e in entries:
            cells = []
            for nfe in shown:
                r = next((r for r in results if r["target"] == t and r["entry"] == e and r["budget"] == nfe), None)
                if r is None or r["nfe"] is None:
                    cells.append("—")
                    continue
                tag = "" if r["nfe"] == nfe else f" [{r['nfe']}]"
                cells.append((_fmt(r["err"]) + " / " if r["det"] else "SW ") + f"{r['sw']:.3f}{tag}")
            lines.append(f"| {e} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["Cells: error / SW; stochastic samplers: SW only. [k]: the NFE actually used when it differs from the "
              "budget; —: no run fits the budget (the adaptive solver's smallest measured NFE is larger).", ""]
    png = Path(args.out).with_name("samplers_error_vs_nfe" + ("_full" if full else "") + ".png")
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(1, len(tnames), figsize=(3.6 * len(tnames), 3.6), squeeze=False)
    colors = {"polydiff": "tab:red", "diffusers": "tab:blue", "k-diffusion": "tab:green"}
    for ax, t in zip(axes[0], tnames):
        for e in entries:  # every deterministic sampler, faint
            rs = [r for r in results if r["target"] == t and r["entry"] == e and r["det"] and r["nfe"] is not None]
            if rs:
                ax.plot([r["nfe"] for r in rs], [min(r["err"], 10.0) for r in rs], color=colors[rs[0]["lib"]],
                        lw=0.6, alpha=0.25)
        for lib in libs:  # the best sampler of each library at each budget, bold
            pts = []
            for nfe in nfes:
                b = _best(results, t, nfe, lib)
                if b:
                    pts.append((nfe, b["err"]))
            ax.plot(*zip(*pts), color=colors[lib], lw=2, marker="o", ms=3.5, label=f"best {lib}",
                    ls="-" if lib == "polydiff" else "--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(t, fontsize=9)
        ax.set_xlabel("NFE")
        ticks = [n for n in (4, 6, 8, 10, 15, 20, 30, 50) if n in nfes]
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(v) for v in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(top=3.0)
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("end-point error / data std")
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.suptitle("Exact-score end-point error vs NFE (bold: best deterministic sampler of each library; faint: "
                 "every sampler)", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    lines += [f"![error vs NFE]({png.name})", ""]
    write_section(args.out, "accuracy-full" if full else "accuracy", "\n".join(lines),
                  title="# Samplers: accuracy and speed")
    print(f"wrote {args.out} and {png}")


if __name__ == "__main__":
    main()
