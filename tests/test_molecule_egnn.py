"""The 3D molecule model: E(3) and permutation equivariance of the EGNN in float64, zero centre of mass of noise,
network outputs and samples, the (N - 1) x 3 coordinate dimensions of the zero-CoM Gaussian, the bond rule."""

import math

import pytest
import torch

from polydiff.domains.molecule import EGNN, MoleculeEDM
from polydiff.domains.molecule.chem import bond_order, infer_bonds, stability
from polydiff.domains.molecule.geometry import (
    centre_of_mass,
    coordinate_dimensions,
    remove_mean,
    zero_com_log_normal,
)

K = 5


def _inputs(seed=0, b=3, n=7):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, n, dtype=torch.float64)
    mask[0, 5:] = 0
    mask[1, 6:] = 0
    x = torch.randn(b, n, 3 + K, generator=g, dtype=torch.float64) * mask.unsqueeze(-1)
    return x, torch.rand(b, generator=g, dtype=torch.float64), mask


def _orthogonal(seed, det):
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    if torch.det(q) * det < 0:
        q[:, 0] = -q[:, 0]
    return q


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model = EGNN(K, hidden=16, layers=3).double()
    # the last coordinate layer starts near zero (EDM's init); scale it up so the test sees real coordinate moves
    for layer in model.layers:
        layer.coord_mlp[-1].weight.data.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("det", [1, -1], ids=["rotation", "reflection"])
def test_egnn_rotation_reflection_translation(net, det):
    x, t, mask = _inputs()
    out = net(x, t, mask)
    q = _orthogonal(1, det)
    shift = torch.tensor([1.5, -2.0, 0.7], dtype=torch.float64)
    moved = x.clone()
    moved[..., :3] = (x[..., :3] @ q.T + shift) * mask.unsqueeze(-1)
    out2 = net(moved, t, mask)
    assert out[..., :3].abs().max() > 1e-3  # the coordinate output is not trivially zero
    torch.testing.assert_close(out2[..., :3], out[..., :3] @ q.T * mask.unsqueeze(-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(out2[..., 3:], out[..., 3:], atol=1e-5, rtol=0)


def test_egnn_permutation(net):
    x, t, mask = _inputs(seed=2)
    mask[:] = 1
    perm = torch.randperm(x.shape[1], generator=torch.Generator().manual_seed(3))
    out = net(x, t, mask)
    torch.testing.assert_close(net(x[:, perm], t, mask), out[:, perm], atol=1e-5, rtol=0)


def test_egnn_output_at_zero_com_and_padding_zero(net):
    x, t, mask = _inputs(seed=4)
    x[..., :3] += 10.0 * mask.unsqueeze(-1)  # an input far from the origin
    out = net(x, t, mask)
    assert centre_of_mass(out[..., :3], mask).abs().max() < 1e-10
    assert out[mask == 0].abs().max() == 0


def test_noise_at_zero_com():
    model = MoleculeEDM(max_atoms=8, hidden=8, layers=1)
    types = torch.tensor([[1, 0, 0, 2, 0, 0], [1, 1, 0, 0, 0, 0]])
    mask = torch.tensor([[1.0] * 6, [1.0] * 4 + [0.0] * 2])
    batch = model.encode({"types": types, "pos": torch.randn(2, 6, 3) + 3.0, "mask": mask})
    assert centre_of_mass(batch.x0[..., :3], mask).abs().max() < 1e-5
    noise = model.sample_noise(batch.x0, torch.Generator().manual_seed(0))
    assert centre_of_mass(noise[..., :3], mask).abs().max() < 1e-5
    assert noise[1, 4:].abs().max() == 0  # padding: no noise
    assert noise[0].std() > 0.5  # the real atoms do get unit-scale noise


def test_samples_at_zero_com_and_from_the_histogram():
    torch.manual_seed(0)
    model = MoleculeEDM(max_atoms=6, hidden=8, layers=1, eval_batch_size=4)
    model.atom_counts.data = torch.tensor([0, 0, 0, 1.0, 0, 1.0, 0])  # only 3 and 5 atoms
    from polydiff.core.sampling import SamplerConfig

    clouds = model.sample_clouds(6, SamplerConfig(name="ddpm", steps=5), seed=1)
    assert sorted({len(t) for t, _ in clouds}) == [3, 5]
    for _, pos in clouds:
        assert pos.mean(0).abs().max() < 1e-10
    # the internal state before decoding: a deterministic sampler keeps x exactly in the subspace
    mask = torch.ones(2, 4)
    mask[1, 3] = 0
    x = model.generate((2, 4, 3 + 5), cond=mask, sampler=SamplerConfig(name="ddim", steps=4), seed=0,
                       x_init=model.start_noise(mask, torch.Generator().manual_seed(0)))
    assert centre_of_mass(x[..., :3].double(), mask.double()).abs().max() < 1e-5


def test_log_likelihood_counts_n_minus_1_times_3_dimensions():
    """The zero-CoM Gaussian's log-density equals that of a standard Gaussian in an orthonormal basis of the subspace,
    which has (n - 1) * 3 dimensions."""
    n = 5
    mask = torch.tensor([[1.0] * n + [0.0, 0.0]], dtype=torch.float64)
    assert coordinate_dimensions(mask).item() == (n - 1) * 3
    x = remove_mean(torch.randn(1, n + 2, 3, dtype=torch.float64), mask)
    # orthonormal basis of {v in R^n : sum v = 0}: the last n - 1 columns of a QR of [1, e_1, ..., e_{n-1}]
    basis, _ = torch.linalg.qr(torch.cat([torch.ones(n, 1), torch.eye(n)[:, : n - 1]], 1).double())
    coords = basis[:, 1:].T @ x[0, :n]                                  # [(n - 1), 3] coordinates in the subspace
    for sigma in (1.0, 0.7):
        expected = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), sigma).log_prob(coords).sum()
        assert math.isclose(zero_com_log_normal(x, mask, sigma).item(), expected.item(), rel_tol=1e-10)


def test_bond_rule():
    assert bond_order("C", "C", 1.54) == 1 and bond_order("C", "C", 1.34) == 2 and bond_order("C", "C", 1.20) == 3
    assert bond_order("C", "H", 1.09) == 1 and bond_order("C", "H", 1.25) == 0
    # methane: C with four H at 1.09 Å, every atom stable
    d = 1.09 / math.sqrt(3)
    pos = torch.tensor([[0, 0, 0], [d, d, d], [-d, -d, d], [-d, d, -d], [d, -d, -d]], dtype=torch.float64)
    elements = ["C", "H", "H", "H", "H"]
    assert stability(elements, infer_bonds(elements, pos.numpy())) == (5, True)
