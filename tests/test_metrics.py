import math

import numpy as np
import pytest
import torch

from pyro_bnn import metrics


def test_rmse_and_coverage():
    assert metrics.rmse([0.0, 0.0], [3.0, 4.0]) == pytest.approx(math.sqrt(12.5))
    assert metrics.rmse([0.0], [2.0], y_scale=3.0) == pytest.approx(6.0)
    assert metrics.coverage([0, 0, 0], [1, 1, 1], [0.5, 1.0, 2.0]) == pytest.approx(2 / 3)


def test_test_log_likelihood_is_log_mean_exp_over_draws():
    ll = torch.log(torch.tensor([[0.1, 0.2], [0.3, 0.4]]))  # (draws, points)
    expected = (math.log(0.2) + math.log(0.3)) / 2
    assert metrics.test_log_likelihood(ll) == pytest.approx(expected)
    assert metrics.test_log_likelihood(ll, y_scale=2.0) == pytest.approx(expected - math.log(2))
    assert metrics.test_log_likelihood(ll.reshape(1, 2, 2)) == pytest.approx(expected)


def test_classification_metrics_against_direct_computation():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6]])
    y = np.array([0, 2, 1, 0])
    assert metrics.accuracy(probs, y) == pytest.approx(0.5)
    assert metrics.nll(probs, y) == pytest.approx(-np.mean(np.log([0.7, 0.6, 0.4, 0.2])))
    onehot = np.eye(3)[y]
    assert metrics.brier(probs, y) == pytest.approx(np.mean(((probs - onehot) ** 2).sum(1)))
    # two bins hold points: confidence 0.6 and 0.6 (one right, one wrong) and 0.7 and 0.5
    ece = metrics.expected_calibration_error(probs, y, num_bins=10)
    conf, correct = probs.max(1), (probs.argmax(1) == y)
    bins = np.minimum((conf * 10).astype(int), 9)
    direct = sum(
        abs(correct[bins == b].mean() - conf[bins == b].mean()) * (bins == b).mean()
        for b in np.unique(bins)
    )
    assert ece == pytest.approx(direct)
