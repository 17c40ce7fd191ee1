"""The deep weight prior (Atanov et al. 2019): an implicit prior over convolution kernels.

A kernel VAE is trained on kernels of networks fitted to a source task: its decoder
p(w | z; φ) with z ~ N(0, I) is the prior of every kernel of a target network's
convolution, and its encoder r(z | w; ψ) starts the reverse model of the posterior's
guide. In Pyro the prior is hierarchical: for a selected convolution weight of shape
(out, in, k, k) the model samples one latent per kernel,
``z ~ N(0, I)`` at the site ``<weight site>.z`` of shape (out, in, z_dim), then the
weight ``w ~ N(μ_φ(z), σ_φ²(z))``. The guide (:class:`pyro_bnn.guides.AutoImplicitPriorNormal`)
samples ``w ~ q(w | θ)`` then ``z ~ r(z | w; ψ)``, and Pyro's ELBO of that pair is the
auxiliary bound L_aux of the paper (its eq. 8).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from pyro_bnn.bayesianize import bayesianize
    >>> vae = KernelVAE(kernel_size=3, z_dim=2, hidden=4)
    >>> prior = DeepWeightPrior({"0": vae})
    >>> net = bayesianize(nn.Sequential(nn.Conv2d(1, 2, 3)), prior)
    >>> net(torch.zeros(1, 1, 5, 5)).shape
    torch.Size([1, 2, 3, 3])
"""

from __future__ import annotations

import fnmatch
import importlib.resources
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from pyro_bnn.files import atomic_open

__all__ = [
    "FORMAT",
    "REVERSE_MODEL",
    "SHIPPED_PRIOR",
    "DeepWeightPrior",
    "KernelDecoder",
    "KernelEncoder",
    "KernelSet",
    "KernelVAE",
    "collect_kernels",
    "default_layers",
    "init_to_decoder_mean",
    "shipped_prior_path",
    "train_kernel_vae",
]

FORMAT = "pyro-bnn/deep-weight-prior"
# version 2: kernel VAEs with Atanov et al.'s depth (``layers`` in each VAE's config)
VERSION = 2
# key of the ``infer`` annotation that tells a guide how to invert an implicit prior's latent
REVERSE_MODEL = "reverse_model"
_MIN_SCALE = 1e-5
# the prior that ``pyro-bnn bench dwp`` learns on notMNIST, shipped as package data
SHIPPED_PRIOR = "data/dwp_notmnist.pt"


def shipped_prior_path() -> Path:
    """Path of the deep weight prior shipped with pyro-bnn (7×7 and 5×5 kernels learned on
    notMNIST, for the ``dwp-cnn`` zoo model), or an error saying how to make one."""
    path = Path(str(importlib.resources.files("pyro_bnn") / SHIPPED_PRIOR))
    if not path.is_file():
        raise FileNotFoundError(
            f"the shipped deep weight prior {path} is missing; pass a prior to the model, or "
            "build it in a checkout of pyro-bnn with "
            f"`pyro-bnn bench dwp --stages prior --ship {path}`"
        )
    return path


def _softplus_scale(raw: torch.Tensor) -> torch.Tensor:
    return F.softplus(raw) + _MIN_SCALE


def _reducing_steps(kernel_size: int) -> list[int]:
    """Sizes of the valid convolutions that take a k×k map to 1×1: 3×3 while the map is at
    least 3 wide (each shrinks it by 2), then one over what is left."""
    steps, side = [], kernel_size
    while side >= 3:
        steps.append(3)
        side -= 2
    if side > 1:
        steps.append(side)
    return steps


def default_layers(kernel_size: int) -> int:
    """Atanov et al.'s encoder depth: the reducing convolutions, plus two padded 3×3 ones
    in front for kernels of 5×5 and below (3 layers for 7×7, 4 for 5×5)."""
    reducing = len(_reducing_steps(kernel_size))
    return reducing + (2 if kernel_size <= 5 else 0)


def _layer_plan(kernel_size: int, layers: int) -> tuple[list[int], int]:
    """(reducing kernel sizes, number of size-preserving convolutions) of an encoder with
    ``layers`` convolutions."""
    reducing = _reducing_steps(kernel_size)
    if layers < len(reducing):
        raise ValueError(
            f"a {kernel_size}×{kernel_size} kernel VAE needs at least {len(reducing)} layers "
            f"to reach 1×1, got {layers}"
        )
    return reducing, layers - len(reducing)


class KernelEncoder(nn.Module):
    """r(z | w; ψ): kernels (..., k, k) → (loc, scale) of a diagonal Gaussian, (..., z_dim).

    As Atanov et al.: ``layers`` convolutions with ELU, first the size-preserving padded
    3×3 ones, then valid ones down to 1×1; channels ``hidden`` in the first half, then
    2·``hidden``; a 1×1 head gives the loc and the scale (through a softplus)."""

    def __init__(self, *, kernel_size: int, z_dim: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.kernel_size, self.z_dim = kernel_size, z_dim
        reducing, padded = _layer_plan(kernel_size, layers)
        blocks: list[nn.Module] = []
        channels = 1
        for i, size in enumerate([3] * padded + reducing):
            width = hidden if i < layers // 2 else 2 * hidden
            blocks += [nn.Conv2d(channels, width, size, padding=1 if i < padded else 0), nn.ELU()]
            channels = width
        blocks.append(nn.Conv2d(channels, 2 * z_dim, 1))
        self.net = nn.Sequential(*blocks)

    def forward(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.kernel_size
        if w.shape[-2:] != (k, k):
            raise ValueError(f"the encoder takes {k}×{k} kernels, got shape {tuple(w.shape)}")
        batch = w.shape[:-2]
        out = self.net(w.reshape(-1, 1, k, k)).reshape(*batch, 2 * self.z_dim)
        loc, raw = out.chunk(2, dim=-1)
        return loc, _softplus_scale(raw)


class KernelDecoder(nn.Module):
    """p(w | z; φ): latents (..., z_dim) → (loc, scale) of a diagonal Gaussian over k×k
    kernels, (..., k, k), the scale through a softplus.

    The encoder mirrored (Atanov et al.): transposed valid convolutions from the 1×1 latent
    up to k×k, between 1×1 convolutions in place of the padded ones, all 2·``hidden`` wide
    except the last (``hidden``), with ELU; a 1×1 head gives the mean and the scale."""

    def __init__(self, *, kernel_size: int, z_dim: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.kernel_size, self.z_dim = kernel_size, z_dim
        reducing, padded = _layer_plan(kernel_size, layers)
        sizes = [1] * ((padded + 1) // 2) + reducing[::-1] + [1] * (padded // 2)
        blocks: list[nn.Module] = []
        channels = z_dim
        for i, size in enumerate(sizes):
            width = hidden if i == len(sizes) - 1 else 2 * hidden
            conv = nn.Conv2d if size == 1 else nn.ConvTranspose2d
            blocks += [conv(channels, width, size), nn.ELU()]
            channels = width
        blocks.append(nn.Conv2d(channels, 2, 1))
        self.net = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if z.shape[-1] != self.z_dim:
            raise ValueError(f"the decoder takes latents of size {self.z_dim}, got {z.shape}")
        k, batch = self.kernel_size, z.shape[:-1]
        out = self.net(z.reshape(-1, self.z_dim, 1, 1)).reshape(*batch, 2, k, k)
        return out[..., 0, :, :], _softplus_scale(out[..., 1, :, :])


class KernelVAE(nn.Module):
    """A VAE over k×k kernels: encoder r(z | w; ψ), decoder p(w | z; φ), prior N(0, I);
    ``layers`` convolutions each way (default: Atanov et al.'s depth for the kernel size).

    Example:
        >>> vae = KernelVAE(kernel_size=5, z_dim=4, hidden=8)
        >>> vae.loss(torch.randn(10, 5, 5)).shape
        torch.Size([])
    """

    def __init__(
        self, *, kernel_size: int, z_dim: int, hidden: int, layers: int | None = None
    ) -> None:
        super().__init__()
        for what, value in (("kernel_size", kernel_size), ("z_dim", z_dim), ("hidden", hidden)):
            if not (isinstance(value, int) and value > 0):
                raise ValueError(f"{what} must be a positive integer, got {value!r}")
        layers = default_layers(kernel_size) if layers is None else layers
        if not (isinstance(layers, int) and layers > 0):
            raise ValueError(f"layers must be a positive integer, got {layers!r}")
        self.config = {
            "kernel_size": kernel_size,
            "z_dim": z_dim,
            "hidden": hidden,
            "layers": layers,
        }
        self.encoder = KernelEncoder(**self.config)
        self.decoder = KernelDecoder(**self.config)

    @property
    def kernel_size(self) -> int:
        return self.config["kernel_size"]

    @property
    def z_dim(self) -> int:
        return self.config["z_dim"]

    def loss(self, w: torch.Tensor) -> torch.Tensor:
        """−ELBO per kernel, averaged over the batch ``w`` of shape (n, k, k)."""
        z_loc, z_scale = self.encoder(w)
        z = z_loc + z_scale * torch.randn_like(z_loc)
        w_loc, w_scale = self.decoder(z)
        log_lik = dist.Normal(w_loc, w_scale).log_prob(w).flatten(-2).sum(-1)
        kl = torch.distributions.kl_divergence(
            dist.Normal(z_loc, z_scale), dist.Normal(torch.zeros_like(z_loc), 1.0)
        ).sum(-1)
        return (kl - log_lik).mean()

    @torch.no_grad()
    def log_density(self, w: torch.Tensor, *, num_samples: int = 32) -> torch.Tensor:
        """Importance-weighted estimate of log p(w) = log ∫ p(w | z) p(z) dz for kernels
        ``w`` (n, k, k), with the encoder r(z | w) as proposal and ``num_samples`` draws
        (one draw is the ELBO, a lower bound; the bound tightens as draws grow)."""
        z_loc, z_scale = self.encoder(w)
        z = z_loc + z_scale * torch.randn(num_samples, *z_loc.shape)
        w_loc, w_scale = self.decoder(z)
        log_w = (
            dist.Normal(w_loc, w_scale).log_prob(w).flatten(-2).sum(-1)
            + dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
            - dist.Normal(z_loc, z_scale).log_prob(z).sum(-1)
        )
        return torch.logsumexp(log_w, 0) - math.log(num_samples)

    @torch.no_grad()
    def sample(self, num_kernels: int, *, mean: bool = False) -> torch.Tensor:
        """``num_kernels`` kernels from the prior, (n, k, k); ``mean`` gives μ_φ(z)."""
        loc, scale = self.decoder(torch.randn(num_kernels, self.z_dim))
        return loc if mean else loc + scale * torch.randn_like(loc)


@dataclass(frozen=True)
class KernelSet:
    """Kernels of one convolution layer gathered from several source networks.

    ``kernels`` (n, k, k) are those kept; ``norm_threshold`` is the L2 norm below which
    kernels were dropped, ``num_dropped`` how many."""

    kernels: torch.Tensor
    norm_threshold: float
    num_dropped: int

    @property
    def num_kept(self) -> int:
        return len(self.kernels)


def collect_kernels(weights: Iterable[torch.Tensor], *, min_norm_ratio: float) -> KernelSet:
    """Every k×k kernel of the convolution ``weights`` (each (out, in, k, k)), dropping those
    whose L2 norm is below ``min_norm_ratio`` times the median kernel norm (the near-zero
    kernels that L2 regularisation leaves in unused channels)."""
    flat = [w.detach().reshape(-1, *w.shape[-2:]) for w in weights]
    if not flat:
        raise ValueError("no convolution weights to collect kernels from")
    shapes = {tuple(w.shape[-2:]) for w in flat}
    if len(shapes) != 1:
        raise ValueError(f"kernels of one layer must share a size, got {sorted(shapes)}")
    kernels = torch.cat(flat).float()
    if not torch.isfinite(kernels).all():
        raise ValueError("the source kernels contain NaN or inf")
    norms = kernels.flatten(1).norm(dim=1)
    threshold = float(min_norm_ratio * norms.median())
    keep = norms >= threshold
    return KernelSet(kernels[keep], threshold, int((~keep).sum()))


def train_kernel_vae(
    kernels: torch.Tensor,
    *,
    z_dim: int,
    hidden: int,
    layers: int | None = None,
    num_epochs: int = 300,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    progress_bar: bool = True,
) -> tuple[KernelVAE, list[float]]:
    """Fit a :class:`KernelVAE` to ``kernels`` (n, k, k) by the ELBO, with Adam at ``lr``
    decayed linearly to 0 (as Atanov et al.). Returns the VAE (in eval mode) and the mean
    loss of each epoch."""
    if kernels.dim() != 3 or kernels.shape[-1] != kernels.shape[-2] or len(kernels) == 0:
        raise ValueError(f"kernels must be a non-empty (n, k, k) tensor, got {kernels.shape}")
    if not torch.isfinite(kernels).all():
        raise ValueError("the kernels contain NaN or inf")
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        vae = KernelVAE(kernel_size=kernels.shape[-1], z_dim=z_dim, hidden=hidden, layers=layers)
        optimizer = torch.optim.Adam(vae.parameters(), lr=lr)
        batches_per_epoch = math.ceil(len(kernels) / batch_size)
        total = num_epochs * batches_per_epoch
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / total)
        history = []
        for _ in tqdm(range(num_epochs), desc="kernel VAE", disable=not progress_bar):
            order = torch.randperm(len(kernels), generator=generator)
            epoch_loss = 0.0
            for start in range(0, len(kernels), batch_size):
                batch = kernels[order[start : start + batch_size]]
                loss = vae.loss(batch)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                epoch_loss += loss.item() * len(batch)
            history.append(epoch_loss / len(kernels))
    return vae.eval(), history


class DeepWeightPrior:
    """Prior hook: the kernels of every convolution weight whose module name matches a
    pattern of ``layers`` get that pattern's kernel VAE as prior; other parameters stay
    deterministic (return ``None``), as in the paper, where the final linear layer and the
    biases are not Bayesian.

    The VAEs are frozen (their decoders define the prior; a guide copies the encoders).
    ``save`` writes a file that :meth:`load` reads with ``torch.load(weights_only=True)``,
    which executes no code from the file.
    """

    def __init__(self, layers: Mapping[str, KernelVAE]) -> None:
        if not layers:
            raise ValueError("a deep weight prior needs at least one layer pattern and its VAE")
        self.layers = dict(layers)
        for vae in self.layers.values():
            if not isinstance(vae, KernelVAE):
                raise TypeError(f"layers must map patterns to KernelVAE, got {type(vae)}")
            vae.eval().requires_grad_(False)

    def vae_for(self, module_name: str) -> KernelVAE | None:
        for pattern, vae in self.layers.items():
            if fnmatch.fnmatchcase(module_name, pattern):
                return vae
        return None

    def __call__(self, name: str, module: nn.Module, parameter: torch.Tensor):
        module_name, _, parameter_name = name.rpartition(".")
        vae = self.vae_for(module_name)
        if vae is None or parameter_name != "weight" or not isinstance(module, nn.Conv2d):
            return None
        k = vae.kernel_size
        if tuple(parameter.shape[-2:]) != (k, k):
            raise ValueError(
                f"{name} has {tuple(parameter.shape[-2:])} kernels but the prior for "
                f"{module_name!r} models {k}×{k} kernels"
            )
        return _KernelConditional(vae, tuple(parameter.shape[:-2]), parameter_name)

    # -- saving and loading -------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Plain tensors, numbers and strings only: what :meth:`save` writes."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "layers": {
                pattern: {"config": dict(vae.config), "state_dict": vae.state_dict()}
                for pattern, vae in self.layers.items()
            },
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the prior to ``path`` atomically (an interrupted save leaves any old file)."""
        with atomic_open(path, "wb") as f:
            torch.save(self.state(), f)

    @classmethod
    def load(cls, path: str | os.PathLike) -> DeepWeightPrior:
        """Read a prior written by :meth:`save`; a missing, corrupt or foreign file raises
        an error that names it. Loading uses ``weights_only=True``: no code runs."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no deep weight prior file at {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises several types for damaged files
            raise ValueError(f"{path} is not a readable deep weight prior file: {error}") from error
        return cls.from_state(state, source=str(path))

    @classmethod
    def from_state(cls, state: Any, *, source: str = "the state") -> DeepWeightPrior:
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError(f"{source} is not a deep weight prior (format {FORMAT!r} expected)")
        if state.get("version") != VERSION:
            raise ValueError(
                f"{source} has version {state.get('version')}, expected {VERSION}: its kernel "
                "VAEs have another architecture; learn the prior again with "
                "`pyro-bnn bench dwp --stages prior`"
            )
        layers = {}
        try:
            for pattern, entry in state["layers"].items():
                vae = KernelVAE(**entry["config"])
                vae.load_state_dict(entry["state_dict"])
                layers[pattern] = vae
        except (KeyError, TypeError, RuntimeError, ValueError, AttributeError) as error:
            raise ValueError(f"{source} holds a damaged deep weight prior: {error}") from error
        for pattern, vae in layers.items():
            if not all(torch.isfinite(p).all() for p in vae.parameters()):
                raise ValueError(f"{source}: the VAE for {pattern!r} has NaN or inf weights")
        return cls(layers)


def init_to_decoder_mean(site: dict | None = None):
    """Atanov et al.'s start for the guide's means: every implicit-prior latent z at a draw
    of N(0, I), every kernel at its decoder's mean μ_φ(z) for that draw (no decoder noise).
    Any other site with a Normal prior starts at its prior mean too (in ``dwp-cnn`` the
    kernels are the only other latents); the rest at a draw of their prior.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from pyro_bnn.bayesianize import bayesianize
        >>> from pyro_bnn.guides import AutoImplicitPriorNormal
        >>> prior = DeepWeightPrior({"0": KernelVAE(kernel_size=3, z_dim=2, hidden=4)})
        >>> net = bayesianize(nn.Sequential(nn.Conv2d(1, 2, 3)), prior)
        >>> guide = AutoImplicitPriorNormal(lambda x: net(x), init_loc_fn=init_to_decoder_mean)
        >>> guide(torch.zeros(1, 1, 4, 4))["0.weight"].shape
        torch.Size([2, 1, 3, 3])
    """
    if site is None:
        return init_to_decoder_mean
    fn = site["fn"]
    if REVERSE_MODEL in (site.get("infer") or {}):
        return fn.sample().detach()
    base = fn.base_dist if isinstance(fn, dist.Independent) else fn
    if isinstance(base, dist.Normal):
        return fn.mean.detach()
    return fn.sample().detach()


class _KernelConditional:
    """``PyroSample``'s lazy prior for one weight: z ~ N(0, I) per kernel, then w | z.

    Called with the owning ``PyroModule`` when the weight is accessed, so the latent site
    is named after the weight's own site."""

    def __init__(self, vae: KernelVAE, kernels_shape: tuple[int, ...], parameter_name: str):
        self.vae, self.kernels_shape, self.parameter_name = vae, kernels_shape, parameter_name

    def __call__(self, module) -> dist.Distribution:
        weight_site = module._pyro_get_fullname(self.parameter_name)
        z_shape = (*self.kernels_shape, self.vae.z_dim)
        standard = dist.Normal(torch.zeros(()), torch.ones(())).expand(z_shape)
        z = pyro.sample(
            f"{weight_site}.z",
            standard.to_event(len(z_shape)),
            infer={REVERSE_MODEL: {"weight": weight_site, "encoder": self.vae.encoder}},
        )
        loc, scale = self.vae.decoder(z)
        return dist.Normal(loc, scale).to_event(len(self.kernels_shape) + 2)
