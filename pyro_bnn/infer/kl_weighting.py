"""Minibatch KL weighting (Blundell et al. 2015, section 3.4).

With M minibatches per epoch the paper minimises, for minibatch i,
F_i = π_i KL(q ‖ p) − E_q[log p(D_i | w)], with Σ_i π_i = 1 so that an epoch sums to the
full free energy. ``"uniform"`` is π_i = 1/M; ``"blundell"`` is π_i = 2^(M−i) / (2^M − 1),
which puts most of the KL on the first minibatches of an epoch and little on the last.

Pyro's minibatch ELBO already scales the likelihood by N/B = M, i.e. it minimises
M·F_i with π_i = 1/M. :class:`KLWeight` scales every site outside the ``data`` plate
(the prior and guide terms, in model and guide alike) by M·π_i, which turns that into
M·F_i for any π.

Example:
    >>> kl_weights("blundell", 3).tolist()
    [0.571..., 0.285..., 0.142...]
"""

from __future__ import annotations

import torch
from pyro.poutine.messenger import Messenger

from pyro_bnn.likelihoods import DATA_PLATE

__all__ = ["KL_WEIGHTINGS", "KLWeight", "kl_weights"]

KL_WEIGHTINGS = ("uniform", "blundell")


def kl_weights(scheme: str, num_batches: int) -> torch.Tensor:
    """π_1 … π_M of an epoch of ``num_batches`` minibatches (float64; they sum to 1)."""
    if scheme not in KL_WEIGHTINGS:
        raise ValueError(f"unknown kl_weighting {scheme!r}; choose one of {KL_WEIGHTINGS}")
    if num_batches < 1:
        raise ValueError(f"an epoch needs at least one minibatch, got {num_batches}")
    if scheme == "uniform":
        return torch.full((num_batches,), 1.0 / num_batches, dtype=torch.float64)
    i = torch.arange(1, num_batches + 1, dtype=torch.float64)
    # 2^(M−i) / (2^M − 1) = 2^(−i) / (1 − 2^(−M)), which does not overflow for large M
    return torch.exp2(-i) / (1 - torch.exp2(torch.tensor(-float(num_batches), dtype=i.dtype)))


class KLWeight(Messenger):
    """Scale every sample site outside the ``data`` plate by ``weight`` (settable)."""

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = weight

    def _pyro_sample(self, msg) -> None:
        if self.weight == 1.0:
            return
        if any(frame.name == DATA_PLATE for frame in msg["cond_indep_stack"]):
            return
        msg["scale"] = msg["scale"] * self.weight
