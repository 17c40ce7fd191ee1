"""Plain (non-Bayesian) torch training for the benches' baselines and source networks.

Example:
    >>> import torch
    >>> net = torch.nn.Linear(3, 2)
    >>> x, y = torch.randn(10, 3), torch.randint(0, 2, (10,))
    >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
    >>> train_classifier(net, x, y, opt, epochs=2, batch_size=4,
    ...                  generator=torch.Generator().manual_seed(0)).training
    False
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["train_classifier"]


def train_classifier(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    drop_last: bool = False,
) -> nn.Module:
    """``epochs`` passes of cross-entropy minibatch steps over a fresh permutation from
    ``generator``; ``drop_last`` skips an epoch's last, smaller batch. Returns ``net`` in
    eval mode."""
    stop = len(x) - batch_size + 1 if drop_last else len(x)
    for _ in range(epochs):
        net.train()
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, stop, batch_size):
            index = order[start : start + batch_size]
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(x[index]), y[index]).backward()
            optimizer.step()
    return net.eval()
