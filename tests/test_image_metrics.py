"""Fréchet distance against its closed form, and the evaluation classifier on held-out real digits."""

import numpy as np
import pytest
import torch
from scipy import linalg

from polydiff.domains.image.metrics import (
    ImageEvaluator,
    _shift,
    feature_fd,
    frechet_distance,
    noise_images,
)


def test_fd_of_identical_feature_sets_is_zero():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(500, 8)) @ rng.normal(size=(8, 8))
    assert abs(feature_fd(f, f)) < 1e-8


def test_fd_of_diagonal_gaussians_equals_closed_form():
    # for commuting covariances: |mu1 - mu2|^2 + sum (sqrt(a_i) - sqrt(b_i))^2
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)
    assert expected == pytest.approx(5.0 + 4.0 + 1.0)


def test_fd_of_full_covariance_gaussians_equals_the_symmetric_form():
    # tr(S1 + S2 - 2 (S1^{1/2} S2 S1^{1/2})^{1/2}): the Wasserstein-2 form, independent of sqrtm(S1 S2)
    rng = np.random.default_rng(1)
    m1, m2 = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    s1, s2 = m1 @ m1.T + 0.1 * np.eye(4), m2 @ m2.T + 0.1 * np.eye(4)
    r1 = linalg.sqrtm(s1).real
    expected = np.trace(s1 + s2 - 2 * linalg.sqrtm(r1 @ s2 @ r1).real) + 4.0
    got = frechet_distance(np.zeros(4), s1, np.full(4, 1.0), s2)
    assert got == pytest.approx(expected, rel=1e-8)


def test_fd_of_samples_converges_to_the_closed_form():
    rng = np.random.default_rng(2)
    a = rng.normal(0.0, 1.0, size=(20000, 2))
    b = rng.normal(0.0, 1.0, size=(20000, 2)) * np.array([2.0, 1.0]) + np.array([1.0, 0.0])
    # closed form: 1 (means) + (2 - 1)^2 (first std) = 2
    assert feature_fd(a, b) == pytest.approx(2.0, abs=0.06)


def test_random_shift_moves_content_by_at_most_one_pixel():
    x = -torch.ones(50, 1, 6, 6)
    x[:, :, 2, 3] = 1.0
    y = _shift(x, torch.Generator().manual_seed(0))
    pos = (y[:, 0] == 1).flatten(1).float().argmax(1)
    rows, cols = pos // 6, pos % 6
    assert ((rows - 2).abs() <= 1).all() and ((cols - 3).abs() <= 1).all()
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 3


def test_evaluation_classifier_on_digits_and_metric_ordering():
    torch.set_num_threads(1)
    from polydiff.datasets.digits import DigitsDataModule

    dm = DigitsDataModule()
    tx, ty = dm.split_tensors("train")
    vx, vy = dm.split_tensors("test")
    ev = ImageEvaluator(tx, ty, vx, vy, 10)
    # the bar: the evaluation classifier scores at least 95 % on held-out real digits
    assert ev.classifier_test_accuracy >= 0.95
    assert 0 < ev.fd_floor < ev.fd_ceiling
    # test images score the floor-or-better; noise scores the ceiling; shuffled labels score chance
    rep = ev.report(vx, vy)
    assert rep["fd"] < 1e-6 and rep["class_accuracy"] == pytest.approx(ev.classifier_test_accuracy)
    wrong = ev.report(vx, (vy + 1) % 10)
    assert wrong["class_accuracy"] < 0.1
    noise = noise_images(tx, 500, seed=1)
    assert ev.fd(noise) > 0.5 * ev.fd_ceiling
