"""polydiff.core.discrete: categorical diffusion (D3PM uniform / absorbing / marginal, MDLM) for any categorical data.

The API in one page (domains with several categorical variables, e.g. node and edge types of graphs, read this)
-------------------------------------------------------------------------------------------------------------------
**Processes** (:mod:`.processes`). ``CategoricalProcess`` is one variable with ``K`` categories and transitions
``Q_t = a_t I + (1 - a_t) 1 m^T`` towards a limit distribution ``m``::

    CategoricalProcess.uniform(K, "cosine")                 # m = 1/K                  (D3PM uniform)
    CategoricalProcess.absorbing(K, "linear")               # m = e_{K-1}, [MASK] last (D3PM absorbing)
    CategoricalProcess.marginal(freqs, "cosine")            # m = freqs / sum(freqs)   (DiGress marginal)

Time ``t`` is continuous in [0, 1] (0 = data, 1 = prior); a ``T``-step model uses ``k / T``. All methods take ``x`` long
tensors of **any shape** ``[B, ...]`` (``[B, L]`` sequences, ``[B, N]`` nodes, ``[B, N, N]`` edges) and times ``[B]``:

* ``alpha_bar(t)``: keep probability; ``Qbar_t = alpha_bar_t I + (1 - alpha_bar_t) 1 m^T`` in closed form.
* ``sample_marginal(x0, t, generator)``: ``x_t ~ q(x_t | x_0)``; ``sample_limit(shape)``: the prior.
* ``posterior_probs(x_t, x0_probs, t, s)``: ``q(x_s | x_t, x_0)`` for one-hot ``x0_probs``, the model step
  ``p(x_s | x_t)`` (D3PM eq. 4) for predicted ones; ``posterior_logits(x_t, x0_logits, t, s)``: its log from network
  logits. ``s = 0`` gives ``p(x_0 | x_t)``. No matrix powers anywhere; ``step_matrix`` / ``cumulative_matrix`` build the
  ``K x K`` matrices for checks only.
* ``restrict_logits(logits)``: removes the absorbing category from x0 predictions.

Several variables with different ``K`` and marginals = several processes sharing one schedule (a tuple). Padding:
every loss helper takes an optional ``mask`` ``[B, ...]`` (1 = counts) and returns per-item sums and counts.

**Objective** (:mod:`.objective`): ``CategoricalConfig(transition, schedule, steps, loss, ce_weight, bound_times)``;
per-position terms ``vb_term`` (bound at one step), ``ce_term``, ``prior_term``, ``mdlm_term``; ``masked_sum``;
``draw_times``.

**Samplers** (:mod:`.sampling`): ``CategoricalSamplerConfig(name="ancestral" | "absorbing_fast", steps <= T)``;
``sample_categorical_diffusion(model_fn, processes, shapes, config, train_steps, generator, device, fixed, values,
project)`` with ``model_fn(xs: tuple, time[b], index[b]) -> tuple of logits``; ``fixed`` / ``values`` pin given
categories (infilling), ``project`` makes every intermediate state valid (e.g. symmetric edges, padding).

**LightningModule** (:mod:`.module`): ``DiscreteDiffusionModule(diffusion, sampler, training)``. A domain:

1. builds ``self.network`` and calls ``self.set_variables([K_nodes, K_edges], marginals=[m_nodes, m_edges],
   weights=[1, 5])`` in ``__init__`` (marginals may be set again from data before training; they live in buffers);
2. ``encode(batch) -> CategoricalBatch(x0=(nodes, edges), mask=(node_mask, edge_mask), cond=...)``;
3. ``x0_logits(xs, time, cond) -> (node_logits [B, N, K_n], edge_logits [B, N, N, K_e])``;
4. optionally ``constrain(xs, mask)`` (symmetrise, reset padding) - applied to noisy training inputs and sampler states;
5. ``write_samples`` (via ``self.generate(shapes, cond, sampler, seed, fixed=..., values=..., mask=...)``) and
   ``test_metrics()``; ``polydiff test`` reports ``bound_bits_per_position`` (the ELBO) plus those.

Training uses ``diffusion_loss`` (hybrid ``T * vb_k + ce_weight * CE`` or MDLM); ``bound_nats`` evaluates the exact
bound (all ``T`` steps) or a stratified estimate.
"""

from polydiff.core.discrete.module import CategoricalBatch, DiscreteDiffusionModule
from polydiff.core.discrete.objective import (
    CategoricalConfig,
    ce_term,
    draw_times,
    make_process,
    masked_sum,
    mdlm_term,
    prior_term,
    vb_term,
)
from polydiff.core.discrete.processes import CategoricalProcess, safe_log, sample_categorical
from polydiff.core.discrete.sampling import (
    CategoricalSamplerConfig,
    absorbing_fast_sample,
    ancestral_sample,
    prior_sample,
    sample_categorical_diffusion,
    time_grid,
)
from polydiff.core.discrete.schedules import alpha_bar, alpha_bar_derivative

__all__ = [
    "CategoricalBatch",
    "CategoricalConfig",
    "CategoricalProcess",
    "CategoricalSamplerConfig",
    "DiscreteDiffusionModule",
    "absorbing_fast_sample",
    "alpha_bar",
    "alpha_bar_derivative",
    "ancestral_sample",
    "ce_term",
    "draw_times",
    "make_process",
    "masked_sum",
    "mdlm_term",
    "prior_sample",
    "prior_term",
    "safe_log",
    "sample_categorical",
    "sample_categorical_diffusion",
    "time_grid",
    "vb_term",
]
