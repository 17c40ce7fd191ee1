"""``dwp-cnn``: the convolutional network of Atanov et al. (2019) with the deep weight prior.

Conv 7×7 (1 → 32), LeakyReLU, 2×2 max-pooling, Conv 5×5 (32 → 128), LeakyReLU, 2×2
max-pooling, then a deterministic Linear layer to ``num_classes`` logits with a categorical
likelihood. The conv kernels are Bayesian under ``prior`` (by default the deep weight prior
shipped with pyro-bnn, learned on notMNIST by ``pyro-bnn bench dwp``); the biases and the
final layer stay deterministic, as in the paper. :func:`cnn` is the same network as a plain
``torch.nn`` module, used to train the source networks whose kernels teach the prior.

Example:
    >>> import torch
    >>> from pyro_bnn.priors import GaussianPrior
    >>> model = DWPCNN(prior=GaussianPrior(scale=1.0, select=CONV_WEIGHTS))
    >>> model(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2])
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from pyro.nn import PyroModule
from torch import nn

from pyro_bnn.bayesianize import bayesianize
from pyro_bnn.likelihoods import Categorical
from pyro_bnn.priors import PriorHook, Selector

__all__ = ["CONV_LAYERS", "CONV_WEIGHTS", "DWPCNN", "KERNEL_SIZES", "cnn"]

# each convolution of :func:`cnn` -> the module-name pattern a DeepWeightPrior keys its VAE by
CONV_LAYERS = {"conv1": "*conv1", "conv2": "*conv2"}
# the side of each convolution's square kernels
KERNEL_SIZES = {"conv1": 7, "conv2": 5}
# the Bayesian part of the network under an ordinary prior: the conv kernels
CONV_WEIGHTS = Selector(module_types=(nn.Conv2d,), parameters=("weight",))


def cnn(
    *,
    widths: tuple[int, int] = (32, 128),
    num_classes: int = 10,
    image_size: int = 28,
    in_channels: int = 1,
) -> nn.Sequential:
    """The plain network: ``conv1`` (7×7), ``conv2`` (5×5), each with LeakyReLU and 2×2
    max-pooling, then ``head``, a Linear layer to the logits."""
    k1, k2 = KERNEL_SIZES["conv1"], KERNEL_SIZES["conv2"]
    side = ((image_size - (k1 - 1)) // 2 - (k2 - 1)) // 2
    if side < 1:
        raise ValueError(f"images of side {image_size} are too small for the 7×7 and 5×5 convs")
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(in_channels, widths[0], k1),
            act1=nn.LeakyReLU(),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(widths[0], widths[1], k2),
            act2=nn.LeakyReLU(),
            pool2=nn.MaxPool2d(2),
            flatten=nn.Flatten(),
            head=nn.Linear(widths[1] * side * side, num_classes),
        )
    )


def default_prior() -> PriorHook:
    """The deep weight prior shipped with pyro-bnn (:func:`pyro_bnn.dwp.shipped_prior_path`)."""
    from pyro_bnn.dwp import DeepWeightPrior, shipped_prior_path

    return DeepWeightPrior.load(shipped_prior_path())


class DWPCNN(PyroModule):
    def __init__(
        self,
        *,
        prior: PriorHook | None = None,
        widths: tuple[int, int] = (32, 128),
        num_classes: int = 10,
        image_size: int = 28,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.net = cnn(widths=tuple(widths), num_classes=num_classes, image_size=image_size)
        bayesianize(self, prior or default_prior())
        self.likelihood = Categorical()

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"dwp-cnn takes images (rows, 1, side, side), got {tuple(x.shape)}")
        return self.likelihood(self.net(x), y)
