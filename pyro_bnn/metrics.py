"""Predictive metrics: RMSE, test log-likelihood, accuracy, NLL, Brier, ECE, coverage.

All accept numpy arrays or tensors and return Python floats.

Example:
    >>> import torch
    >>> rmse(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 4.0]))
    1.414...
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "accuracy",
    "brier",
    "coverage",
    "expected_calibration_error",
    "nll",
    "rmse",
    "test_log_likelihood",
]


def _t(value) -> torch.Tensor:
    return torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)


def rmse(mean, y, *, y_scale: float = 1.0) -> float:
    """Root mean squared error, times ``y_scale`` to report in the original units of y."""
    return float(((_t(mean).double() - _t(y).double()) ** 2).mean().sqrt()) * y_scale


def test_log_likelihood(log_lik, *, y_scale: float = 1.0) -> float:
    """Mean over points of log (1/S) Σ_s p(y_i | θ_s), in the original units of y.

    ``log_lik`` holds pointwise log-likelihoods with draws leading: (S, n) or
    (chain, draw, n). Targets standardised by ``y_scale`` shift every density by
    −log ``y_scale``.
    """
    ll = _t(log_lik).double()
    ll = ll.reshape(-1, ll.shape[-1])
    per_point = torch.logsumexp(ll, dim=0) - math.log(ll.shape[0])
    return float(per_point.mean()) - math.log(y_scale)


def accuracy(probs, y) -> float:
    return float((_t(probs).argmax(-1) == _t(y).long()).double().mean())


def nll(probs, y, *, eps: float = 1e-12) -> float:
    """Mean negative log predictive probability of the true class."""
    p = _t(probs).double().gather(-1, _t(y).long()[:, None])[:, 0]
    return float(-(p.clamp_min(eps)).log().mean())


def brier(probs, y) -> float:
    """Mean over points of Σ_k (p_k − 1[y = k])²."""
    p = _t(probs).double()
    onehot = torch.nn.functional.one_hot(_t(y).long(), p.shape[-1]).double()
    return float(((p - onehot) ** 2).sum(-1).mean())


def expected_calibration_error(probs, y, *, num_bins: int = 15) -> float:
    """ECE: Σ_b (n_b / n) |accuracy_b − confidence_b| over equal-width confidence bins."""
    p = _t(probs).double()
    confidence, predicted = p.max(-1)
    correct = (predicted == _t(y).long()).double()
    edges = torch.linspace(0, 1, num_bins + 1, dtype=torch.float64)
    bins = torch.bucketize(confidence, edges[1:-1], right=True)
    ece = 0.0
    for b in range(num_bins):
        mask = bins == b
        if mask.any():
            ece += float(mask.double().mean()) * abs(
                float(correct[mask].mean()) - float(confidence[mask].mean())
            )
    return ece


def coverage(lower, upper, y) -> float:
    """Fraction of targets inside [lower, upper]."""
    y = _t(y).double()
    return float(((y >= _t(lower).double()) & (y <= _t(upper).double())).double().mean())
