"""Samplers: small pure functions over a denoiser and a log-SNR grid.

Each takes ``(model, x, logsnrs)`` where ``x`` is the start (pure noise at ``logsnrs[0]``, in the scale of the model's
process), ``logsnrs`` an increasing grid from :mod:`polydiff.core.grids`, and returns the end point. Random draws come
from the explicit ``generator``; arithmetic is in float64 whatever the network's precision. Because every update is
written in terms of ``(alpha, sigma, lambda)`` taken from the model's process, every sampler runs on every process
(VP, VE/EDM, rectified flow) and every parameterisation.

Notation: ``lambda = log(alpha^2/sigma^2)``; DPM-Solver's half log-SNR is ``lambda/2``; ``h = (lambda_s - lambda_t)/2``.
"""

import math
from typing import Any, Callable

import torch
from torch import Tensor

from polydiff.core.denoiser import Denoiser
from polydiff.core.processes import logsnr_of_ve_sigma
from polydiff.core.utils import append_dims

Callback = Callable[[int, Tensor, Tensor], None]  # (step index, x, x0_hat)


def _randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    # draw on the generator's device (CPU by default) so results do not depend on the accelerator; float32 draws
    # (6x cheaper than float64 on CPU) are exact normals to 1e-7, far below any sampler's error, and the update that
    # uses them stays in float64
    dev = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, dtype=torch.float32, device=dev).to(x.device, torch.float64)


def _call(model: Denoiser, x: Tensor, lam: Tensor, cond: Any) -> Tensor:
    return model(x, lam.to(x.device).expand(x.shape[0]), cond).double()


def _half_lambdas(model: Denoiser, logsnrs: Tensor) -> tuple[list[float], list[float], list[float]]:
    """Per grid point: half log-SNR ``lambda/2`` (DPM-Solver's lambda), alpha and sigma, as Python floats."""
    alpha, sigma = model.process.alpha_sigma(logsnrs)
    return [v / 2 for v in logsnrs.tolist()], alpha.double().tolist(), sigma.double().tolist()


def _scales(model: Denoiser, lam: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    a, s = model.process.alpha_sigma(lam)
    return a.to(x.device), s.to(x.device)


def ddim(
    model: Denoiser,
    x: Tensor,
    logsnrs: Tensor,
    cond: Any = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    eta: float = 0.0,
) -> Tensor:
    """DDIM (Song et al. 2021, eq. 12) with stochasticity ``eta``; ``eta = 1`` is DDPM's ancestral sampler.

    ``x_s = alpha_s x0 + sqrt(sigma_s^2 - c^2) eps_hat + c z`` with
    ``c = eta sigma_s sqrt(1 - e^{lambda_t - lambda_s})``, the
    posterior standard deviation of q(x_s | x_t, x_0) scaled by ``eta``. Invariant to a common rescaling of (alpha, sigma).
    """
    x = x.double()
    lam, alpha, sigma = _half_lambdas(model, logsnrs)
    for i in range(len(logsnrs) - 1):
        x0 = _call(model, x, logsnrs[i], cond)
        if callback is not None:
            callback(i, x, x0)
        x = _ddim_update(x, x0, alpha[i], sigma[i], alpha[i + 1], sigma[i + 1], 2 * (lam[i] - lam[i + 1]), eta,
                         generator)
    return x


def _ddim_update(x: Tensor, x0: Tensor, a_t: float, s_t: float, a_s: float, s_s: float, dlam: float, eta: float,
                 generator: torch.Generator | None) -> Tensor:
    """:func:`ddim_step` with the scales as Python floats (``dlam = lambda_t - lambda_s <= 0``)."""
    if math.isinf(dlam):
        return x0
    c = eta * s_s * math.sqrt(max(-math.expm1(dlam), 0.0)) if eta != 0 else 0.0
    # a_s x0 + k eps with eps = (x - a_t x0) / s_t, folded into two tensor operations
    k = (math.sqrt(max(s_s**2 - c**2, 0.0)) if eta != 0 else s_s) / s_t
    out = torch.add(x * k, x0, alpha=a_s - k * a_t)
    return out if eta == 0 else out.add_(_randn_like(x, generator), alpha=c)


def ddim_step(
    model: Denoiser, x: Tensor, x0: Tensor, lt: Tensor, ls: Tensor, eta: float, generator: torch.Generator | None
) -> Tensor:
    """One DDIM / ancestral step from log-SNR ``lt`` to ``ls`` given the prediction ``x0``."""
    a_t, s_t = _scales(model, lt, x)
    a_s, s_s = _scales(model, ls, x)
    if torch.isinf(ls):
        return x0
    eps = (x - a_t * x0) / s_t
    if eta == 0:
        return a_s * x0 + s_s * eps
    c = eta * s_s * (-torch.expm1(lt - ls)).clamp_min(0).sqrt()
    return a_s * x0 + (s_s**2 - c**2).clamp_min(0).sqrt() * eps + c * _randn_like(x, generator)


def ddpm(model: Denoiser, x: Tensor, logsnrs: Tensor, cond: Any = None, generator: torch.Generator | None = None,
         callback: Callback | None = None) -> Tensor:
    """DDPM ancestral sampling (Ho et al. 2020): each step draws from q(x_s | x_t, x0_hat)."""
    return ddim(model, x, logsnrs, cond, generator, callback, eta=1.0)


def flow_euler(model: Denoiser, x: Tensor, logsnrs: Tensor, cond: Any = None, generator: torch.Generator | None = None,
               callback: Callback | None = None) -> Tensor:
    """Euler on the flow-matching ODE ``dx/dt = u`` in flow coordinates (Lipman et al. 2022; Liu et al. 2022).

    Any Gaussian process is a rectified flow after ``x_f = x / (alpha + sigma)``, ``t_f = sigma / (alpha + sigma)``; the
    velocity is ``u = (x_f - x0_hat) / t_f``. (Algebraically this is DDIM with eta = 0; the tests check it numerically.)
    """
    x = x.double()
    _, alpha, sigma = _half_lambdas(model, logsnrs)
    for i in range(len(logsnrs) - 1):
        x0 = _call(model, x, logsnrs[i], cond)
        if callback is not None:
            callback(i, x, x0)
        a_t, s_t, a_s, s_s = alpha[i], sigma[i], alpha[i + 1], sigma[i + 1]
        xf, tf, tf_next = x / (a_t + s_t), s_t / (a_t + s_t), s_s / (a_s + s_s)
        u = (xf - x0) / tf
        x = (xf + (tf_next - tf) * u) * (a_s + s_s)
    return x


def _heun_like(model: Denoiser, x: Tensor, logsnrs: Tensor, cond: Any, generator: torch.Generator | None,
               callback: Callback | None, second_order: bool, s_churn: float, s_tmin: float, s_tmax: float,
               s_noise: float) -> Tensor:
    """EDM's stochastic sampler (Karras et al. 2022, Algorithm 2) in VE coordinates ``x~ = x / alpha``.

    The state is carried as ``x~``; each network call converts back with the family's alpha at that log-SNR, so the
    algorithm is exact for every process.
    """
    n = len(logsnrs) - 1
    lam, alpha, _ = _half_lambdas(model, logsnrs)
    sigmas = [math.exp(-v) for v in lam]  # sigma~ = e^{-lambda/2}, 0 at lambda = +inf
    xv = x.double() / alpha[0]
    for i in range(n):
        sig, sig_next = sigmas[i], sigmas[i + 1]
        gamma = min(s_churn / n, math.sqrt(2) - 1) if s_tmin <= sig <= s_tmax else 0.0
        if gamma > 0:
            sig_hat = sig * (1 + gamma)
            xv = xv + (math.sqrt(sig_hat**2 - sig**2) * s_noise) * _randn_like(xv, generator)
            lam_hat = torch.tensor(logsnr_of_ve_sigma(sig_hat), dtype=torch.float64)
            a_hat = float(model.process.alpha_sigma(lam_hat)[0])
        else:
            sig_hat, lam_hat, a_hat = sig, logsnrs[i], alpha[i]
        x0 = _call(model, xv * a_hat, lam_hat, cond)
        if callback is not None:
            callback(i, xv * a_hat, x0)
        # d = (x - x0) / sigma; Euler: x + dt d; Heun: x + dt (d + d_next) / 2 (scalars folded into add's alpha)
        dt = sig_next - sig_hat
        x_next = xv.mul(sig_next / sig_hat).add_(x0, alpha=-dt / sig_hat)  # = xv + dt (xv - x0) / sig_hat
        if second_order and sig_next > 0:
            x0_next = _call(model, x_next * alpha[i + 1], logsnrs[i + 1], cond)
            # xv + dt/2 (d + d_next), d = (xv - x0)/sig_hat, d_next = (x_next - x0_next)/sig_next, in four in-place ops
            c, c_next = dt / (2 * sig_hat), dt / (2 * sig_next)
            x_next = x_next.mul_(c_next).add_(xv, alpha=1 + c).add_(x0, alpha=-c).add_(x0_next, alpha=-c_next)
        xv = x_next
    return xv * alpha[-1]


def euler(model: Denoiser, x: Tensor, logsnrs: Tensor, cond: Any = None, generator: torch.Generator | None = None,
          callback: Callback | None = None, s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"),
          s_noise: float = 1.0) -> Tensor:
    """Euler on the probability-flow ODE in ``sigma~`` (k-diffusion's ``sample_euler``), with optional EDM churn."""
    return _heun_like(model, x, logsnrs, cond, generator, callback, False, s_churn, s_tmin, s_tmax, s_noise)


def heun(model: Denoiser, x: Tensor, logsnrs: Tensor, cond: Any = None, generator: torch.Generator | None = None,
         callback: Callback | None = None, s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"),
         s_noise: float = 1.0) -> Tensor:
    """EDM's 2nd-order Heun sampler with churn (Karras et al. 2022, Alg. 2); the step to sigma = 0 is an Euler step.

    With a grid of ``n`` steps ending at zero it costs ``2n - 1`` network evaluations.
    """
    return _heun_like(model, x, logsnrs, cond, generator, callback, True, s_churn, s_tmin, s_tmax, s_noise)


def dpmpp_2m(model: Denoiser, x: Tensor, logsnrs: Tensor, cond: Any = None, generator: torch.Generator | None = None,
             callback: Callback | None = None, eta: float = 0.0) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Alg. 2), and its SDE form for ``eta > 0``.

    Data-prediction exponential integrator with a multistep second-order correction:
    ``x_s = (sigma_s/sigma_t) e^{-eta h} x_t + alpha_s (1 - e^{-(1+eta) h}) D + sigma_s sqrt(1 - e^{-2 eta h}) z``,
    where ``D = x0 + (x0 - x0_prev) / (2r)``, ``r = h_prev / h`` (midpoint form; k-diffusion's ``sample_dpmpp_2m(_sde)``).
    The first step, and the step to sigma = 0, are first order.
    """
    x = x.double()
    lam, alpha, sigma = _half_lambdas(model, logsnrs)
    x0_prev, h_prev = None, None
    for i in range(len(logsnrs) - 1):
        x0 = _call(model, x, logsnrs[i], cond)
        if callback is not None:
            callback(i, x, x0)
        if math.isinf(lam[i + 1]):
            x = x0
            break
        a_s, s_s, s_t = alpha[i + 1], sigma[i + 1], sigma[i]
        h = lam[i + 1] - lam[i]
        phi = -math.expm1(-(1 + eta) * h)
        # x_s = (s_s/s_t) e^{-eta h} x + a_s phi D with D = (1 + 1/(2r)) x0 - x0_prev / (2r)
        x = torch.add(x * ((s_s / s_t) * math.exp(-eta * h)), x0, alpha=a_s * phi)
        if x0_prev is not None:
            w = 1 / (2 * (h_prev / h))
            x = x.add_(x0 - x0_prev, alpha=a_s * phi * w)
        if eta > 0:
            x = x + (s_s * math.sqrt(-math.expm1(-2 * eta * h))) * _randn_like(x, generator)
        x0_prev, h_prev = x0, h
    return x


def dpmpp_2m_sde(model: Denoiser, x: Tensor, logsnrs: Tensor, cond: Any = None,
                 generator: torch.Generator | None = None, callback: Callback | None = None, eta: float = 1.0) -> Tensor:
    """DPM-Solver++(2M) SDE (eta = 1 by default)."""
    return dpmpp_2m(model, x, logsnrs, cond, generator, callback, eta=eta)



# --------------------------------------------------------------------------------------------------------------------
# Higher-order multistep solvers. Their coefficients depend only on the grid, so they are computed with Python floats
# (no tiny tensor ops per step); only the state updates touch tensors.


def _final_denoise(x: Tensor, x_eval: Tensor, x0: Tensor, alpha: float) -> Tensor:
    """The step to sigma = 0 from ``x`` when the last prediction ``x0`` was made at ``x_eval`` (a corrector moved x).

    ``x0_hat(x) = (x - sigma eps_hat) / alpha`` with the noise prediction of ``x_eval``: at the last, small noise level
    eps_hat varies with x only as ``sigma / Var(x0)``, so this uses the corrector's last update at no extra network cost,
    where a data-prediction step (``x0_hat(x_eval)``) discards it. Equal to ``x0`` when ``x is x_eval``.
    """
    if x is x_eval:
        return x0
    return x0 + (x - x_eval) / alpha


def dpmpp_3m(model: Denoiser, x: Tensor, logsnrs: Tensor, cond: Any = None, generator: torch.Generator | None = None,
             callback: Callback | None = None, eta: float = 0.0, lower_order_final: bool = True,
             corrector: bool = False) -> Tensor:
    """DPM-Solver++(3M) (Lu et al. 2022, "DPM-Solver++", Sec. 4 and App. B), and its SDE form for ``eta > 0``.

    Data-prediction exponential integrator with ``h = (lambda_s - lambda_t)/2``, ``h_eta = (1 + eta) h``:
    ``x_s = (sigma_s/sigma_t) e^{-eta h} x_t + alpha_s [(1 - e^{-h_eta}) D_0 + phi_2 d_1 - phi_3 d_2] + noise`` with
    ``phi_2 = 1 - (1 - e^{-h_eta})/h_eta``, ``phi_3 = phi_2/h_eta - 1/2`` and ``d_1, d_2`` the first and second divided
    differences of the last three x0 predictions in lambda, scaled by h (the exact integral of their quadratic
    interpolant, as in k-diffusion's ``sample_dpmpp_3m_sde``). The noise term is
    ``sigma_s sqrt(1 - e^{-2 eta h}) z`` (DPM-Solver++ SDE, Lu et al. 2022, eq. 17 with the variance of the exact
    linear SDE solution). The first steps warm up at order 1 and 2; the step to sigma = 0 is ``x0_hat``.

    Args:
        eta: 0 solves the probability-flow ODE; 1 the reverse SDE.
        lower_order_final: with fewer than 15 steps the last finite step is second order (as diffusers does): it is
            the step with the largest ratio of neighbouring step sizes on Karras grids, where third order loses
            stability.
        corrector: after each evaluation, correct the step that led to it with UniC (Zhao et al. 2023, Sec. 3.2: the
            corrector applies to any multistep predictor and raises its order by one at no extra network cost).
            Only for the ODE (``eta = 0``).
    """
    if corrector and eta > 0:
        raise ValueError("dpmpp_3m: the UniC corrector is for the ODE (eta = 0) only")
    x = x.double()
    n = len(logsnrs) - 1
    lam, alpha, sigma = _half_lambdas(model, logsnrs)
    hist: list[tuple[float, Tensor]] = []  # (lambda, x0_hat), most recent last
    prev = None
    for i in range(n):
        x_eval = x
        x0 = _call(model, x, logsnrs[i], cond)
        if callback is not None:
            callback(i, x, x0)
        if prev is not None:
            x = _unipc_correct(prev, x0)
        if math.isinf(lam[i + 1]):
            return _final_denoise(x, x_eval, x0, alpha[i])
        h = lam[i + 1] - lam[i]
        h_eta = (1 + eta) * h
        order = min(3, len(hist) + 1)
        if lower_order_final and n < 15 and i == n - 2:
            order = min(order, 2)
        if corrector:
            prev = _unic_state(hist + [(lam[i], x0)], lam[i + 1], x, alpha[i + 1], sigma[i + 1] / sigma[i], order, "bh2")
        one_m = -math.expm1(-h_eta)  # 1 - e^{-h_eta}
        x = (sigma[i + 1] / sigma[i] * math.exp(-eta * h)) * x + (alpha[i + 1] * one_m) * x0
        if order >= 2:
            phi_2 = 1 - one_m / h_eta
            lam_1, x0_1 = hist[-1]
            r0 = (lam[i] - lam_1) / h
            d1_0 = (x0 - x0_1) / r0
            if order == 2:
                x = x + (alpha[i + 1] * phi_2) * d1_0
            else:
                lam_2, x0_2 = hist[-2]
                r1 = (lam_1 - lam_2) / h
                d1_1 = (x0_1 - x0_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_3 = phi_2 / h_eta - 0.5
                x = x + (alpha[i + 1] * phi_2) * d1 - (alpha[i + 1] * phi_3) * d2
        if eta > 0:
            x = x + (sigma[i + 1] * math.sqrt(-math.expm1(-2 * eta * h))) * _randn_like(x, generator)
        hist = (hist + [(lam[i], x0)])[-2:]
    return x


def dpmpp_3m_sde(model: Denoiser, x: Tensor, logsnrs: Tensor, cond: Any = None,
                 generator: torch.Generator | None = None, callback: Callback | None = None, eta: float = 1.0) -> Tensor:
    """DPM-Solver++(3M) SDE (eta = 1 by default)."""
    return dpmpp_3m(model, x, logsnrs, cond, generator, callback, eta=eta)


def _unipc_coefficients(hh: float, order: int, variant: str) -> tuple[float, list[float]]:
    """``B(h)`` and the right-hand side ``b`` of UniPC's order conditions (Zhao et al. 2023, Alg. 2 and 3; App. C).

    ``b_k = k! phi_{k+1}(hh) / B(h)`` where ``phi_1(hh) = (e^{hh} - 1)/hh`` and ``phi_{k+1} = (phi_k - 1/k!)/hh``;
    ``B(h) = hh`` (variant bh1) or ``e^{hh} - 1`` (bh2), with ``hh = -h`` for data prediction.
    """
    h_phi_1 = math.expm1(hh)
    b_h = hh if variant == "bh1" else h_phi_1
    h_phi_k = h_phi_1 / hh - 1
    fact = 1
    b = []
    for i in range(1, order + 1):
        b.append(h_phi_k * fact / b_h)
        fact *= i + 1
        h_phi_k = h_phi_k / hh - 1 / fact
    return b_h, b


def _solve(rks: list[float], b: list[float]) -> list[float]:
    """Solve the Vandermonde system ``sum_j rks[j]^(i) rho_j = b_i`` (i = 0..len-1) in float64."""
    m = len(rks)
    r = torch.tensor([[rk**i for rk in rks] for i in range(m)], dtype=torch.float64)
    return torch.linalg.solve(r, torch.tensor(b[:m], dtype=torch.float64)).tolist()


def unipc(model: Denoiser, x: Tensor, logsnrs: Tensor, cond: Any = None, generator: torch.Generator | None = None,
          callback: Callback | None = None, order: int = 2, variant: str = "bh2", lower_order_final: bool = True,
          corrector: bool = True, final_corrector: bool = True) -> Tensor:
    """UniPC (Zhao et al. 2023): the UniP-p multistep predictor with the UniC corrector, data prediction.

    After each network evaluation at the predicted point, UniC re-solves the step with that evaluation included, which
    raises the order by one at no extra cost (the evaluation is reused by the next predictor step).

    Args:
        order: predictor order p (1 to 4); the corrector makes the step order p + 1.
        variant: ``bh1`` (``B(h) = h``) or ``bh2`` (``B(h) = e^h - 1``), Zhao et al. 2023, eq. 19.
        lower_order_final: the k-th-last step uses order at most k (UniPC's default; needed at the step to sigma = 0).
        corrector: apply UniC after every evaluation (False gives the plain UniP predictor).
        final_corrector: use the last correction in the final step to sigma = 0 (see ``_final_denoise``); diffusers
            and the reference implementation return ``x0_hat`` of the uncorrected point there.
    """
    if not 1 <= order <= 4:
        raise ValueError(f"unipc order must be 1..4, got {order}")
    x = x.double()
    n = len(logsnrs) - 1
    lam, alpha, sigma = _half_lambdas(model, logsnrs)
    hist: list[tuple[float, Tensor]] = []  # (lambda, x0_hat), most recent last
    prev = None  # the last step's UniC state (see _unic_state)
    for i in range(n):
        x_eval = x
        x0 = _call(model, x, logsnrs[i], cond)
        if callback is not None:
            callback(i, x, x0)
        if corrector and prev is not None:
            x = _unipc_correct(prev, x0)
        hist = (hist + [(lam[i], x0)])[-order:]
        if math.isinf(lam[i + 1]):
            return _final_denoise(x, x_eval, x0, alpha[i]) if final_corrector else x0
        p = min(order, len(hist))
        if lower_order_final:
            p = min(p, n - i)
        prev = _unic_state(hist, lam[i + 1], x, alpha[i + 1], sigma[i + 1] / sigma[i], p, variant)
        _, b_h, rks, d1s, b, _, x_t_, _ = prev
        x = x_t_
        if p >= 2:
            rhos_p = [0.5] if p == 2 else _solve(rks, b)
            res = sum(rho * d for rho, d in zip(rhos_p, d1s))
            x = x_t_ - (alpha[i + 1] * b_h) * res
    return x


def _unic_state(hist: list[tuple[float, Tensor]], lam_s: float, x: Tensor, alpha_s: float, sigma_ratio: float,
                p: int, variant: str) -> tuple:
    """Everything UniP-p / UniC-p need for a step from ``hist[-1]`` (lambda_t, x0_hat) to ``lam_s``.

    ``rks`` are the previous nodes' offsets ``(lambda_k - lambda_t) / h`` and ``d1s`` the differences
    ``(x0_k - x0_t) / r_k``; ``x_t_`` is the first-order (DDIM) part of the step.
    """
    lam_t, x0 = hist[-1]
    h = lam_s - lam_t
    rks = [(hist[-1 - k][0] - lam_t) / h for k in range(1, p)]
    d1s = [(hist[-1 - k][1] - x0) / rk for k, rk in zip(range(1, p), rks)]
    b_h, b = _unipc_coefficients(-h, p, variant)
    x_t_ = sigma_ratio * x - (alpha_s * math.expm1(-h)) * x0
    return (p, b_h, rks, d1s, b, x0, x_t_, alpha_s)


def _unipc_correct(prev: tuple, x0_new: Tensor) -> Tensor:
    """UniC-p: redo the last step with the new evaluation ``x0_new`` as the final node (``r = 1``)."""
    p, b_h, rks, d1s, b, x0, x_t_, a_s = prev
    rhos_c = [0.5] if p == 1 else _solve(rks + [1.0], b)
    res = sum(rho * d for rho, d in zip(rhos_c[:-1], d1s)) if p > 1 else 0.0
    return x_t_ - (a_s * b_h) * (res + rhos_c[-1] * (x0_new - x0))


def dpmpp_3m_unic(model: Denoiser, x: Tensor, logsnrs: Tensor, cond: Any = None,
                  generator: torch.Generator | None = None, callback: Callback | None = None) -> Tensor:
    """DPM-Solver++(3M) predictor with the UniC-3 corrector (order 4 per step at one evaluation per step)."""
    return dpmpp_3m(model, x, logsnrs, cond, generator, callback, corrector=True)


def unipc_1(model: Denoiser, x: Tensor, logsnrs: Tensor, cond: Any = None, generator: torch.Generator | None = None,
            callback: Callback | None = None) -> Tensor:
    """UniPC-1 (bh1): the DDIM step with the UniC-1 corrector, second order per step; best below ~8 NFE on sharp data."""
    return unipc(model, x, logsnrs, cond, generator, callback, order=1, variant="bh1")


def unipc_3(model: Denoiser, x: Tensor, logsnrs: Tensor, cond: Any = None, generator: torch.Generator | None = None,
            callback: Callback | None = None) -> Tensor:
    """UniPC-3 (bh2): third-order predictor, fourth-order corrected steps."""
    return unipc(model, x, logsnrs, cond, generator, callback, order=3, variant="bh2")


def consistency(model: Denoiser, x: Tensor, logsnrs: Tensor, cond: Any = None,
                generator: torch.Generator | None = None, callback: Callback | None = None) -> Tensor:
    """Multistep consistency sampling (Song et al. 2023, Alg. 1) for few-step students (:mod:`polydiff.core.fewstep`):
    jump to ``x0_hat`` at each level, then re-noise it to the next level with fresh noise, ``x = alpha x0_hat + sigma z``
    (q(x_s | x0_hat), not the posterior q(x_s | x_t, x0_hat) that DDPM draws from). One step is ``x0_hat(x_T)``. Not a
    solver of the diffusion's ODE or SDE: with an exact denoiser it forgets all but ``x0_hat`` at every level."""
    x = x.double()
    _, alpha, sigma = _half_lambdas(model, logsnrs)
    for i in range(len(logsnrs) - 1):
        x0 = _call(model, x, logsnrs[i], cond)
        if callback is not None:
            callback(i, x, x0)
        x = x0 * alpha[i + 1]
        if sigma[i + 1] > 0:
            x = x.add_(_randn_like(x, generator), alpha=sigma[i + 1])
    return x


# the linear multistep family (LMS, PLMS, DEIS) and DPM-Solver-fast build on the helpers above: imported after them
from polydiff.core.multistep import deis, deis_2, deis_pc, lms, plms  # noqa: E402
from polydiff.core.singlestep import dpm_fast  # noqa: E402

SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "ddpm": ddpm,
    "ddim": ddim,
    "euler": euler,
    "heun": heun,
    "dpmpp_2m": dpmpp_2m,
    "dpmpp_2m_sde": dpmpp_2m_sde,
    "flow_euler": flow_euler,
    "dpmpp_3m": dpmpp_3m,
    "dpmpp_3m_sde": dpmpp_3m_sde,
    "unipc": unipc,
    "dpmpp_3m_unic": dpmpp_3m_unic,
    "unipc_1": unipc_1,
    "unipc_3": unipc_3,
    "lms": lms,
    "plms": plms,
    "deis": deis,
    "deis_2": deis_2,
    "deis_pc": deis_pc,
    "dpm_fast": dpm_fast,
    "consistency": consistency,
}


def network_evaluations(name: str, steps: int, final_step: str = "zero") -> int:
    """Number of network evaluations (NFE) of a sampler for a grid of ``steps`` intervals."""
    nfe = 2 * steps - (1 if final_step == "zero" else 0) if name == "heun" else steps
    nfe += 1 if name == "plms" and steps > 1 else 0  # PLMS's Heun-like first step
    return nfe + (1 if final_step == "denoise" else 0)


__all__ = ["SAMPLERS", "network_evaluations", "append_dims"] + list(SAMPLERS)
