"""Categorical forward processes ``Q_t = a_t I + (1 - a_t) 1 m^T`` with closed-form marginals and posteriors.

Every transition of D3PM that mixes towards a fixed distribution has this form (Austin et al. 2021, sec. 3; Vignac et al.
2023, DiGress, sec. 4.1): a row of ``Q_t`` keeps the category with probability ``a_t`` and otherwise redraws it from the
*limit distribution* ``m``:

* uniform:   ``m = 1/K``                        (D3PM eq. for ``Q^uniform``),
* absorbing: ``m = e_mask`` (one-hot on the absorbing category)  (D3PM ``Q^absorb``),
* marginal:  ``m`` = given category frequencies (DiGress ``Q^marginal``).

Because ``m^T 1 = 1``, products stay in the family: ``Q_s Q_t = a_s a_t I + (1 - a_s a_t) 1 m^T``. Hence

* cumulative: ``Qbar_t = alpha_bar_t I + (1 - alpha_bar_t) 1 m^T`` (no matrix powers), and between two times
  ``s < t``: ``Q_{t|s} = (alpha_bar_t / alpha_bar_s) I + (1 - alpha_bar_t / alpha_bar_s) 1 m^T``;
* posterior (D3PM eq. 3): ``q(x_s | x_t, x_0) ∝ q(x_t | x_s) q(x_s | x_0)``, where ``q(x_t | x_s = j)`` is a row of
  ``Q_{t|s}`` read at column ``x_t`` and ``q(x_s = j | x_0) = alpha_bar_s [j = x_0] + (1 - alpha_bar_s) m_j``;
* the model's reverse step (x0-parameterisation, DiGress eq. 4 / MDLM): ``p(x_s | x_t) = sum_x0 q(x_s | x_t, x0)
  p~(x0 | x_t)``, computed in one pass from the network's predicted distribution (see :meth:`posterior_probs`).

Several arguments take ``x`` of any shape ``[B, ...]`` (long) and times of shape ``[B]``; distributions carry one more
trailing axis of size ``K``.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from polydiff.core.discrete.schedules import alpha_bar
from polydiff.core.utils import PolydiffError, append_dims

#: probabilities are clamped to this before a log, so log-probabilities stay finite (and gradients free of NaN)
PROB_FLOOR = 1e-30
#: logit given to categories that the data never takes (the absorbing category) so their x0 probability is ~0
LOGIT_NEVER = -1e4


def safe_log(p: Tensor) -> Tensor:
    """``log(max(p, 1e-30))``: exact zeros become a large negative number instead of -inf."""
    return torch.log(p.clamp_min(PROB_FLOOR))


class CategoricalProcess:
    """A categorical forward process for one variable with ``K`` categories.

    Args:
        limit: the limit distribution ``m`` (shape ``[K]``, sums to one): where categories go when they are redrawn.
        schedule: keep-probability schedule name (see :mod:`polydiff.core.discrete.schedules`).
        absorbing_index: the absorbing category (absorbing processes only); the data never takes it, so
            :meth:`restrict_logits` removes it from x0 predictions.
        kind: "uniform", "absorbing" or "marginal" (for messages and checks only).
    """

    def __init__(self, limit: Tensor, schedule: str = "linear", absorbing_index: int | None = None,
                 kind: str = "marginal") -> None:
        limit = torch.as_tensor(limit, dtype=torch.float64)
        if limit.ndim != 1 or limit.numel() < 2:
            raise PolydiffError(f"limit distribution must be a vector of >= 2 probabilities, got shape {list(limit.shape)}")
        if (limit < 0).any() or abs(float(limit.sum()) - 1.0) > 1e-6:
            raise PolydiffError(f"limit distribution must be non-negative and sum to 1 (sum {float(limit.sum()):.6f}); "
                                "normalise the marginals")
        alpha_bar(schedule, 0.0)  # validates the name
        self.limit = limit / limit.sum()
        self.schedule = schedule
        self.absorbing_index = absorbing_index
        self.kind = kind

    # ------------------------------------------------------------------ constructors
    @classmethod
    def uniform(cls, num_categories: int, schedule: str = "cosine") -> "CategoricalProcess":
        """D3PM uniform transitions: a redrawn category is uniform over all ``K``."""
        return cls(torch.full((num_categories,), 1.0 / num_categories), schedule, None, "uniform")

    @classmethod
    def absorbing(cls, num_categories: int, schedule: str = "linear", absorbing_index: int | None = None
                  ) -> "CategoricalProcess":
        """D3PM absorbing ([MASK]) transitions: a redrawn category becomes ``absorbing_index`` (default: the last)."""
        idx = num_categories - 1 if absorbing_index is None else int(absorbing_index)
        if not 0 <= idx < num_categories:
            raise PolydiffError(f"absorbing_index {idx} is outside 0..{num_categories - 1}")
        return cls(F.one_hot(torch.tensor(idx), num_categories).double(), schedule, idx, "absorbing")

    @classmethod
    def marginal(cls, marginals: Tensor, schedule: str = "cosine") -> "CategoricalProcess":
        """DiGress marginal transitions: a redrawn category follows the given frequencies (normalised here)."""
        m = torch.as_tensor(marginals, dtype=torch.float64)
        if m.ndim != 1 or (m < 0).any() or float(m.sum()) <= 0:
            raise PolydiffError("marginals must be a vector of non-negative frequencies with a positive sum")
        return cls(m / m.sum(), schedule, None, "marginal")

    @property
    def num_categories(self) -> int:
        return int(self.limit.numel())

    # ------------------------------------------------------------------ schedule
    def alpha_bar(self, t: Tensor | float) -> Tensor:
        """Keep probability from 0 to ``t`` (float64)."""
        return alpha_bar(self.schedule, t)

    def _m(self, like: Tensor) -> Tensor:
        return self.limit.to(device=like.device, dtype=like.dtype)

    # ------------------------------------------------------------------ forward process
    def marginal_probs(self, x0_probs: Tensor, t: Tensor) -> Tensor:
        """``q(x_t | x_0)`` for a distribution over ``x_0`` (``[B, ..., K]``): ``alpha_bar_t p + (1 - alpha_bar_t) m``."""
        ab = append_dims(self.alpha_bar(t), x0_probs.ndim).to(device=x0_probs.device, dtype=x0_probs.dtype)
        return ab * x0_probs + (1 - ab) * self._m(x0_probs)

    def sample_marginal(self, x0: Tensor, t: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``x_t ~ q(x_t | x_0)``: keep each category with probability ``alpha_bar_t``, else redraw from ``m``."""
        ab = append_dims(self.alpha_bar(t), x0.ndim).to(x0.device)
        keep = _uniform(x0.shape, generator, x0.device) < ab
        return torch.where(keep, x0, self.sample_limit(x0.shape, generator, x0.device))

    def sample_limit(self, shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu") -> Tensor:
        """Draw from the limit distribution ``m`` (the prior ``p(x_1)``)."""
        if self.absorbing_index is not None:
            return torch.full(tuple(shape), self.absorbing_index, dtype=torch.long, device=device)
        gen_device = generator.device if generator is not None else "cpu"
        flat = torch.multinomial(self.limit.float().to(gen_device), int(torch.Size(shape).numel()), replacement=True,
                                 generator=generator)
        return flat.reshape(tuple(shape)).to(device)

    # ------------------------------------------------------------------ posterior
    def posterior_probs(self, x_t: Tensor, x0_probs: Tensor, t: Tensor, s: Tensor) -> Tensor:
        """``q(x_s | x_t, x_0)`` (one-hot ``x0_probs``) or the model step ``p(x_s | x_t)`` (predicted ``x0_probs``).

        Bayes' rule in closed form for ``s < t`` (shape ``[B]`` each; ``s = 0`` gives ``p(x_0 | x_t)``), D3PM eq. 3:
        ``q(x_s | x_t, x_0) = q(x_t | x_s) q(x_s | x_0) / q(x_t | x_0)``. The model step averages it over the predicted
        ``x_0`` (Vignac et al. 2023, DiGress, eq. 4; Sahoo et al. 2024, MDLM): ``p(x_s | x_t) = sum_x0 q(x_s | x_t, x_0)
        p~(x_0 | x_t)``; it is linear in ``p~ / q(x_t | x_0)``, which is reweighted here once, so no ``K x K`` matrix is
        formed. (D3PM eq. 4 averages the *joint* ``q(x_s, x_t | x_0)`` instead; the two coincide for absorbing processes,
        and only this form is exact when ``p~`` is the true posterior of ``x_0``.) Returns probabilities ``[B, ..., K]``.
        """
        K = self.num_categories
        if x0_probs.shape[-1] != K or x0_probs.shape[:-1] != x_t.shape:
            raise PolydiffError(f"x0 distribution has shape {list(x0_probs.shape)}; expected {list(x_t.shape)} + [{K}]")
        dtype, dev = x0_probs.dtype, x0_probs.device
        ab_t, ab_s = self.alpha_bar(t), self.alpha_bar(s)
        a_ts = (ab_t / ab_s.clamp_min(1e-300)).clamp(0.0, 1.0)  # keep probability from s to t
        ab_t = append_dims(ab_t, x0_probs.ndim).to(device=dev, dtype=dtype)
        a_ts = append_dims(a_ts, x0_probs.ndim).to(device=dev, dtype=dtype)
        ab_s = append_dims(ab_s, x0_probs.ndim).to(device=dev, dtype=dtype)
        m = self._m(x0_probs)
        onehot_t = F.one_hot(x_t, K).to(dtype)
        m_t = m[x_t].unsqueeze(-1)
        # q(x_t | x_0 = i) for every i (column x_t of Qbar_t); x_0 that cannot give x_t get weight 0
        lik = ab_t * onehot_t + (1 - ab_t) * m_t
        w = torch.where(lik > 0, x0_probs / lik.clamp_min(PROB_FLOOR), torch.zeros_like(x0_probs))
        w = w / w.sum(-1, keepdim=True).clamp_min(PROB_FLOOR)
        # q(x_t | x_s = j) for every j: column x_t of Q_{t|s}
        fact1 = a_ts * onehot_t + (1 - a_ts) * m_t
        # sum_i w_i q(x_s = j | x_0 = i): row of Qbar_s averaged over the reweighted x_0
        fact2 = ab_s * w + (1 - ab_s) * m
        joint = fact1 * fact2
        return joint / joint.sum(-1, keepdim=True).clamp_min(PROB_FLOOR)

    def posterior_logits(self, x_t: Tensor, x0_logits: Tensor, t: Tensor, s: Tensor) -> Tensor:
        """Log-probabilities of the model step ``p(x_s | x_t)`` from the network's x0 logits (D3PM eq. 4)."""
        probs = torch.softmax(self.restrict_logits(x0_logits), dim=-1)
        return safe_log(self.posterior_probs(x_t, probs, t, s))

    def restrict_logits(self, x0_logits: Tensor) -> Tensor:
        """Remove categories the data never takes (the absorbing one) from x0 logits."""
        if self.absorbing_index is None:
            return x0_logits
        out = x0_logits.clone()
        out[..., self.absorbing_index] = LOGIT_NEVER
        return out

    # ------------------------------------------------------------------ matrices (for checks on small K)
    def step_matrix(self, t: Tensor | float, s: Tensor | float) -> Tensor:
        """The ``K x K`` transition ``Q_{t|s}`` (float64), rows ``x_s``, columns ``x_t``; for tests and small K."""
        a = float(self.alpha_bar(t) / self.alpha_bar(s))
        return a * torch.eye(self.num_categories, dtype=torch.float64) + (1 - a) * self.limit.expand(
            self.num_categories, -1)

    def cumulative_matrix(self, t: Tensor | float) -> Tensor:
        """``Qbar_t`` in closed form (float64)."""
        return self.step_matrix(t, 0.0)


def _uniform(shape: torch.Size, generator: torch.Generator | None, device: torch.device) -> Tensor:
    gen_device = generator.device if generator is not None else "cpu"
    return torch.rand(tuple(shape), generator=generator, device=gen_device, dtype=torch.float64).to(device)


def sample_categorical(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One draw per position from probabilities ``[..., K]`` (Gumbel-max on log-probabilities, float64 noise)."""
    gen_device = generator.device if generator is not None else "cpu"
    u = torch.rand(probs.shape, generator=generator, device=gen_device, dtype=torch.float64).to(probs.device)
    gumbel = -torch.log(-torch.log(u.clamp(1e-300, 1.0 - 1e-16)))
    return (safe_log(probs.double()) + gumbel).argmax(-1)
