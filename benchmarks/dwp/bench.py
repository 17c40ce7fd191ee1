"""``pyro-bnn bench dwp``: the deep weight prior on MNIST with small training sets.

Atanov et al. (2019). Four stages, each resumable from ``out/results.json``:

- ``prior``: train ``source_nets`` plain CNNs (the ``dwp-cnn`` network, L2 regularised)
  on notMNIST from different seeds; gather the kernels of each conv layer, drop the
  near-zero-norm ones (norm below ``min_norm_ratio`` × the layer's median norm), fit one
  kernel VAE per layer and save the :class:`~pyro_bnn.dwp.DeepWeightPrior` to
  ``out/dwp_notmnist.pt`` (``ship=PATH`` also writes a copy there: the library's shipped
  prior is ``pyro_bnn/data/dwp_notmnist.pt``, and the repository commits only that copy;
  a rerun whose ``out/`` recorded its prior stage resumes from ``ship``). A figure puts
  prior samples beside real source kernels (the paper's Fig. 1c).
- ``table``: MNIST's 10,000 images split once, seeded: 5,000 test images, and a pool of
  5,000 from which each training set of 50 … 1,000 images is drawn ``num_draws`` times.
  Each (prior, size, draw) fits ``dwp-cnn`` with its conv kernels Bayesian under the deep
  weight prior (method ``dwp``), N(0, 1) (``meanfield``) or log-uniform
  (``multiplicative``), local reparameterization on, and scores the test accuracy of a
  ``predict_samples``-draw predictive ensemble.
- ``init``: the prior as an initialiser of a conventional CNN: test accuracy over the
  first epochs with kernels drawn from the prior vs Xavier (Fig. 4), and random-feature
  extraction, where only the last layer trains, for two widths (Fig. 3).

Example:
    >>> DWPBenchConfig.tiny().train_sizes
    (10, 20)
"""

from __future__ import annotations

import argparse
import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pyro.infer.autoguide.initialization import init_to_sample
from torch import nn
from tqdm import tqdm

from benchmarks import harness
from benchmarks.cards import split_card, update_card
from benchmarks.plain import train_classifier
from pyro_bnn.datasets import mnist
from pyro_bnn.dwp import (
    DeepWeightPrior,
    collect_kernels,
    init_to_decoder_mean,
    train_kernel_vae,
)
from pyro_bnn.infer import fit
from pyro_bnn.init import init_to_fan_in
from pyro_bnn.metrics import accuracy
from pyro_bnn.priors import GaussianPrior, LogUniformPrior
from pyro_bnn.zoo.dwp_cnn import CONV_LAYERS, CONV_WEIGHTS, DWPCNN, KERNEL_SIZES, cnn

__all__ = ["PAPER", "STAGES", "DWPBenchConfig", "format_markdown", "main", "run_dwp_bench"]

STAGES = ("prior", "table", "init")
PRIORS = ("dwp", "log-uniform", "normal")
# Atanov et al. 2019, Fig. 2a (../shared/reference/README.md): 10-sample ensemble accuracy
PAPER = {
    "dwp": {50: 0.800, 100: 0.867, 200: 0.915, 500: 0.945, 1000: 0.961},
    "log-uniform": {50: 0.766, 100: 0.839, 200: 0.894, 500: 0.938, 1000: 0.958},
    "normal": {50: 0.717, 100: 0.816, 200: 0.890, 500: 0.938, 1000: 0.959},
}
PIXEL_SCALE = 255.0
SOURCE_OPTIMIZERS = ("adam", "adamw")  # see _source_optimizer_of


@dataclass(frozen=True, kw_only=True)
class DWPBenchConfig(harness.Settings):
    """Every choice of the bench. Sizes per layer are (conv1, conv2)."""

    # Defaults follow Atanov et al.'s code (github SamsungLabs/deep-weight-prior) where
    # this machine affords it; each departure is an option, and the card says which.
    # prior: source networks on notMNIST, then one kernel VAE per conv layer
    source_nets: int = 10  # the paper's §4 (their README's command launches 100)
    source_widths: tuple[int, int] = (32, 128)  # authors: 256, 512 (an hour here at ours)
    source_init: str = "xavier-normal"  # authors: Xavier-normal weights; or "torch"
    source_epochs: int = 100
    source_batch_size: int = 256
    source_lr: float = 1e-3
    source_lr_decay: str = "linear"  # to 0 over the epochs (authors), or "none"
    # "adam": λ·Σw² over the conv layers' parameters added to the mean cross-entropy
    # (authors); "adamw": decoupled weight decay λ on every parameter
    source_optimizer: str = "adam"
    source_weight_decay: float = 1e-3
    source_test: int = 1000
    # None: the source nets' kernels. Or two .npy files, conv1's 7×7 and conv2's 5×5
    # kernels, (n, k, k) or (n, 1, k, k), used instead of training source nets: e.g. the
    # authors' released data/fconv/conv7x7/train.npy and conv5x5/test.npy
    # (SamsungLabs/deep-weight-prior, MIT). They are taken as kept kernels (the authors'
    # files hold their live ones): min_norm_ratio filters only source nets' kernels
    source_kernels: tuple[str, str] | None = None
    # authors: their kept 5×5 kernels start near 0.8 × the median, their 7×7 ones near
    # 0.3 ×. In our source nets the dead kernels (norm < 0.01) and the live ones (> 0.03)
    # sit far apart, and 0.25 cuts between them; the probes found no difference
    min_norm_ratio: tuple[float, float] = (0.25, 0.8)
    vae_z_dim: tuple[int, int] = (2, 4)
    # authors: (32, 64); a 5×5 decoder 64 wide runs its 128-channel transposed convolutions
    # on each of conv2's 4096 kernels at every step of every fit (about 1 s per step on
    # this CPU): 16 wide is 16× cheaper there
    vae_hidden: tuple[int, int] = (32, 16)
    vae_layers: tuple[int, int] = (3, 4)  # authors: 3 convolutions for 7×7, 4 for 5×5
    vae_epochs: tuple[int, int] = (300, 300)
    vae_batch_size: int = 128
    vae_lr: float = 1e-3
    vae_max_kernels: int | None = None  # None: every kept kernel (authors)
    # table: small-data MNIST
    test_size: int = 5000
    train_sizes: tuple[int, ...] = (50, 100, 200, 500, 1000)
    num_draws: int = 5
    stratified: bool = True  # training sets with equal counts per class (authors)
    priors: tuple[str, ...] = PRIORS
    # authors: 10,000 epochs at 50 images; 1,000 steps (a sum of learning rates of 0.5)
    # is what the 3-hour table budget affords, and what the probes ran (was 300)
    fit_steps: int = 1000
    batch_size: int = 256  # authors: full batch up to 256 images
    lr: float = 1e-3
    final_lr: float = 0.0
    lr_decay: str = "linear"  # authors: linear to 0; or "geometric"
    fit_init: str = "decoder-mean"  # dwp kernel means: "decoder-mean" (authors), "prior-draw"
    train_reverse_model: bool = False  # authors: r(z | w) is the VAE's encoder, frozen
    head_init: str = "xavier-normal"  # the deterministic head: authors' Xavier, or "torch"
    predict_samples: int = 10
    # init: the prior as an initialiser (Fig. 4) and random features (Fig. 3)
    init_epochs: int = 5
    init_seeds: int = 3
    init_batch_size: int = 64
    feature_widths: tuple[tuple[int, int], ...] = ((8, 32), (32, 128))
    feature_epochs: int = 20
    seed: int = 0
    data_dir: str | None = None
    max_images: int | None = None  # tests: fewer images, same code path

    def __post_init__(self) -> None:
        for name, choices in (
            ("source_optimizer", SOURCE_OPTIMIZERS),
            ("source_lr_decay", ("linear", "none")),
            ("source_init", ("xavier-normal", "torch")),
            ("lr_decay", ("linear", "geometric")),
            ("fit_init", ("decoder-mean", "prior-draw")),
            ("head_init", ("xavier-normal", "torch")),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; choose from {choices}")
        if self.source_kernels is not None and len(self.source_kernels) != len(CONV_LAYERS):
            raise ValueError(
                f"source_kernels needs one .npy file per conv layer ({', '.join(CONV_LAYERS)}), "
                f"got {len(self.source_kernels)}"
            )

    @classmethod
    def tiny_settings(cls) -> dict[str, Any]:
        return dict(
            source_nets=2,
            source_epochs=1,
            source_test=20,
            vae_hidden=(4, 4),
            vae_epochs=(2, 1),
            source_batch_size=32,
            vae_max_kernels=500,
            test_size=60,
            train_sizes=(10, 20),
            num_draws=2,
            fit_steps=3,
            batch_size=16,
            predict_samples=2,
            init_epochs=1,
            init_seeds=1,
            feature_widths=((2, 4), (4, 8)),
            feature_epochs=1,
            max_images=120,
        )


# -- data -------------------------------------------------------------------------------


def _images(name: str, config: DWPBenchConfig, num_train: int):
    """``name``'s images as (n, 1, 28, 28) in [0, 1], split once by the bench's seed."""
    split = mnist(
        name,
        data_dir=config.data_dir,
        num_train=num_train,
        seed=config.seed,
        pixel_scale=PIXEL_SCALE,
        flatten=False,
    )
    if config.max_images is not None:
        keep = config.max_images - num_train
        return split.x_train, split.y_train, split.x_test[:keep], split.y_test[:keep]
    return split.x_train, split.y_train, split.x_test, split.y_test


def mnist_pool_and_test(config: DWPBenchConfig):
    """(pool x, pool y, test x, test y): the last ``test_size`` images of MNIST's seeded
    permutation are the test set, the others the pool the training sets come from."""
    total = config.max_images or 10_000
    return _images("mnist", config, total - config.test_size)


def training_set(pool_x, pool_y, *, size: int, draw: int, seed: int, stratified: bool = False):
    """Draw ``draw`` of ``size`` images from the pool, without replacement, seeded by
    (seed, size, draw) so every prior sees the same images. ``stratified``: equal counts
    per class (Atanov et al.), the remainder of ``size`` spread over random classes."""
    if size > len(pool_x):
        raise ValueError(f"a training set of {size} images needs a pool that large")
    rng = np.random.default_rng([seed, size, draw])
    if not stratified:
        index = rng.choice(len(pool_x), size=size, replace=False)
        return pool_x[torch.from_numpy(index)], pool_y[torch.from_numpy(index)]
    labels = pool_y.numpy()
    classes = np.unique(labels)
    counts = np.full(len(classes), size // len(classes))
    counts[rng.choice(len(classes), size=size % len(classes), replace=False)] += 1
    picks = []
    for label, count in zip(classes, counts, strict=True):
        members = np.flatnonzero(labels == label)
        if count > len(members):
            raise ValueError(f"class {label} has {len(members)} pool images, {count} needed")
        picks.append(rng.choice(members, size=count, replace=False))
    index = torch.from_numpy(rng.permutation(np.concatenate(picks)))
    return pool_x[index], pool_y[index]


# -- stage "prior" ----------------------------------------------------------------------


def _train_plain(
    net: nn.Module,
    x,
    y,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
    params=None,
) -> nn.Module:
    """Adam on the cross-entropy, no regularisation (the init stage's networks)."""
    optimizer = torch.optim.Adam(params or net.parameters(), lr=lr)
    return train_classifier(
        net, x, y, optimizer, epochs=epochs, batch_size=batch_size, generator=generator
    )


def _source_optimizer_of(net: nn.Sequential, config: DWPBenchConfig) -> torch.optim.Optimizer:
    """``"adam"``: the gradient of λ·Σw² over the convolutions' parameters added to the
    cross-entropy's (torch's coupled ``weight_decay`` 2λ), as Atanov et al.; ``"adamw"``:
    decoupled decay λ on every parameter."""
    decay = config.source_weight_decay
    if config.source_optimizer == "adamw":
        return torch.optim.AdamW(net.parameters(), lr=config.source_lr, weight_decay=decay)
    conv = [p for layer in CONV_LAYERS for p in getattr(net, layer).parameters()]
    rest = [p for p in net.parameters() if all(p is not q for q in conv)]
    groups = [{"params": conv, "weight_decay": 2 * decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.Adam(groups, lr=config.source_lr)


def train_source_net(net: nn.Sequential, x, y, *, config: DWPBenchConfig, seed: int):
    """One source network, its rate decayed per epoch as ``source_lr_decay`` says."""
    optimizer = _source_optimizer_of(net, config)
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(config.source_epochs):
        if config.source_lr_decay == "linear":
            for group in optimizer.param_groups:
                group["lr"] = config.source_lr * (1 - epoch / config.source_epochs)
        train_classifier(
            net, x, y, optimizer, epochs=1, batch_size=config.source_batch_size,
            generator=generator,
        )  # fmt: skip
    return net.eval()


def _plain_accuracy(net: nn.Module, x, y) -> float:
    with torch.no_grad():
        return accuracy(torch.cat([net(x[i : i + 1000]) for i in range(0, len(x), 1000)]), y)


def train_source_nets(config: DWPBenchConfig, *, progress: bool):
    """The source CNNs on notMNIST and their test accuracies."""
    x, y, x_test, y_test = _images(
        "notmnist", config, (config.max_images or 10_000) - config.source_test
    )
    nets, accuracies = [], []
    for s in tqdm(range(config.source_nets), desc="source nets", disable=not progress):
        torch.manual_seed(config.seed + s)
        net = cnn(widths=tuple(config.source_widths))
        if config.source_init == "xavier-normal":  # the authors' weights_init
            for module in net.modules():
                if isinstance(module, nn.Conv2d | nn.Linear):
                    nn.init.xavier_normal_(module.weight)
        net = train_source_net(net, x, y, config=config, seed=config.seed + s)
        nets.append(net)
        accuracies.append(_plain_accuracy(net, x_test, y_test))
    return nets, accuracies


SOURCE_FIELDS = (
    "source_nets", "source_widths", "source_init", "source_epochs", "source_batch_size",
    "source_lr", "source_lr_decay", "source_optimizer", "source_weight_decay", "source_test",
    "seed", "max_images",
)  # fmt: skip


def read_kernel_file(path: Path | str, *, kernel_size: int) -> torch.Tensor:
    """The k×k kernels held by an ``.npy`` file, (n, k, k) or (n, 1, k, k), as a float
    tensor (n, k, k). Read with ``allow_pickle=False``, so the file never runs code.

    Example:
        >>> import tempfile
        >>> f = Path(tempfile.mkdtemp()) / "k.npy"
        >>> np.save(f, np.ones((3, 1, 5, 5)))
        >>> read_kernel_file(f, kernel_size=5).shape
        torch.Size([3, 5, 5])
    """
    path = Path(path)
    if path.suffix != ".npy":
        raise ValueError(f"{path}: a kernel file must be a .npy array")
    if not path.is_file():
        raise FileNotFoundError(f"no kernel file {path}")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(f"{path} is not a readable .npy array: {error}") from None
    if array.dtype.kind not in "fiu":
        raise ValueError(f"{path} holds {array.dtype} values, not numbers")
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    k = kernel_size
    if array.ndim != 3 or array.shape[1:] != (k, k) or len(array) == 0:
        raise ValueError(
            f"{path} holds an array of shape {array.shape}; expected (n, {k}, {k}) or "
            f"(n, 1, {k}, {k}) with n > 0"
        )
    kernels = torch.from_numpy(array.astype(np.float32))
    if not torch.isfinite(kernels).all():
        raise ValueError(f"{path} holds NaN or inf")
    return kernels


def _kernel_files(config: DWPBenchConfig) -> dict[str, str]:
    """{conv layer: its kernel file} of ``config.source_kernels``; empty without them."""
    if config.source_kernels is None:
        return {}
    return dict(zip(CONV_LAYERS, config.source_kernels, strict=True))


def source_kernels(config: DWPBenchConfig, *, cache: Path | None, progress: bool):
    """Every kernel of each conv layer of the source nets, {layer: (nets, out, in, k, k)},
    with the nets' test accuracies and the seconds they took. ``cache``: a file that
    keeps them, reused while the source settings it records are the same. With
    ``config.source_kernels``, the kernels of those files instead ({layer: (1, n, k, k)}),
    no accuracies and no time."""
    files = _kernel_files(config)
    if files:
        kernels = {
            layer: read_kernel_file(path, kernel_size=KERNEL_SIZES[layer])[None]
            for layer, path in files.items()
        }
        return kernels, [], 0.0
    settings = {name: getattr(config, name) for name in SOURCE_FIELDS}
    if cache is not None and cache.is_file():
        saved = torch.load(cache, map_location="cpu", weights_only=True)
        if saved.get("settings") == settings:
            return saved["kernels"], saved["accuracy"], saved["source_s"]
    start = time.perf_counter()
    nets, accuracies = train_source_nets(config, progress=progress)
    kernels = {
        layer: torch.stack([getattr(net, layer).weight.detach() for net in nets])
        for layer in CONV_LAYERS
    }
    source_s = time.perf_counter() - start
    if cache is not None:
        state = {"settings": settings, "kernels": kernels, "accuracy": accuracies}
        torch.save({**state, "source_s": source_s}, cache)
    return kernels, accuracies, source_s


def learn_prior(config: DWPBenchConfig, *, progress: bool, cache: Path | None = None):
    """Source nets → kernels → one VAE per layer. Returns the prior, the kernels kept per
    layer and the stage's record; ``cache``: see :func:`source_kernels`."""
    start = time.perf_counter()
    all_kernels, accuracies, source_s = source_kernels(config, cache=cache, progress=progress)
    vaes, kernels, layers = {}, {}, {}
    files = _kernel_files(config)
    for i, (layer, pattern) in enumerate(CONV_LAYERS.items()):
        # a kernel file holds kept kernels already (the authors' are their live ones): no
        # second norm filter; the source nets' kernels are filtered
        ratio = 0.0 if files else config.min_norm_ratio[i]
        kept = collect_kernels(all_kernels[layer], min_norm_ratio=ratio)
        train = kept.kernels
        if config.vae_max_kernels is not None and len(train) > config.vae_max_kernels:
            rng = np.random.default_rng([config.seed, i])
            pick = rng.choice(len(train), size=config.vae_max_kernels, replace=False)
            train = train[torch.from_numpy(pick)]
        vae_start = time.perf_counter()
        vae, history = train_kernel_vae(
            train,
            z_dim=config.vae_z_dim[i],
            hidden=config.vae_hidden[i],
            layers=config.vae_layers[i],
            num_epochs=config.vae_epochs[i],
            batch_size=config.vae_batch_size,
            lr=config.vae_lr,
            seed=config.seed + i,
            progress_bar=progress,
        )
        vaes[pattern], kernels[layer] = vae, kept.kernels
        layers[layer] = {
            "kernel_size": vae.kernel_size,
            "kernels_total": kept.num_kept + kept.num_dropped,
            "kept_norm_median": float(kept.kernels.flatten(1).norm(dim=1).median()),
            "vae_sample_norm_median": float(vae.sample(5000).flatten(1).norm(dim=1).median()),
            "kernels_dropped": kept.num_dropped,
            "norm_threshold": kept.norm_threshold,
            "vae_training_kernels": len(train),
            "vae_final_loss": history[-1],
            "vae_s": time.perf_counter() - vae_start,
        }
        if files:  # which file, exactly: the record names it by content
            digest = hashlib.sha256(Path(files[layer]).read_bytes()).hexdigest()
            layers[layer]["source_file_sha256"] = digest
    record = {
        "source_test_accuracy": accuracies,
        "source_s": source_s,
        "layers": layers,
        "wall_s": time.perf_counter() - start,
    }
    return DeepWeightPrior(vaes), kernels, record


def kernels_figure(
    prior: DeepWeightPrior,
    kernels: dict[str, torch.Tensor],
    path: Path,
    *,
    per_row: int = 12,
    seed: int = 0,
) -> None:
    """Real source kernels above prior samples, per layer (the paper's Fig. 1c)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = 2 * len(CONV_LAYERS)
    fig, axes = plt.subplots(rows, per_row, figsize=(per_row * 0.6, rows * 0.62 + 0.5))
    generator = torch.Generator().manual_seed(seed)
    for i, (layer, pattern) in enumerate(CONV_LAYERS.items()):
        real = kernels[layer][torch.randperm(len(kernels[layer]), generator=generator)[:per_row]]
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            sampled = prior.layers[pattern].sample(per_row)
        for row, (what, images) in enumerate((("source", real), ("prior", sampled))):
            for j in range(per_row):
                ax = axes[2 * i + row, j]
                ax.set_xticks([]), ax.set_yticks([])
                if j < len(images):
                    ax.imshow(images[j].numpy(), cmap="gray")
            axes[2 * i + row, 0].set_ylabel(f"{layer}\n{what}", fontsize=7)
    fig.suptitle("Source kernels (notMNIST CNNs) and samples from the deep weight prior")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- stage "table" ----------------------------------------------------------------------


def _fit_options(prior_name: str, config: DWPBenchConfig, size: int) -> dict[str, Any]:
    common = dict(
        num_steps=config.fit_steps,
        lr=config.lr,
        final_lr=config.final_lr,
        lr_decay=config.lr_decay,
        batch_size=None if size <= config.batch_size else config.batch_size,
        num_draws=config.predict_samples,
        local_reparameterization=True,
        init_scale=math.exp(-5),
        progress_bar=False,
    )
    if prior_name == "dwp":
        start = init_to_decoder_mean if config.fit_init == "decoder-mean" else init_to_sample
        return dict(
            common,
            method="dwp",
            init_loc_fn=start,
            train_reverse_model=config.train_reverse_model,
        )
    # N(0, 1) draws would start 7-49 times too large; both start at fan-in scale
    method = "meanfield" if prior_name == "normal" else "multiplicative"
    return dict(common, method=method, init_loc_fn=init_to_fan_in)


def _prior(prior_name: str, dwp: DeepWeightPrior | None):
    if prior_name == "dwp":
        if dwp is None:
            raise ValueError("the dwp rows need the prior stage's prior")
        return dwp
    if prior_name == "normal":
        return GaussianPrior(scale=1.0, select=CONV_WEIGHTS)
    if prior_name == "log-uniform":
        return LogUniformPrior(select=CONV_WEIGHTS)
    raise ValueError(f"unknown prior {prior_name!r}; choose from {PRIORS}")


def fit_cell(
    prior_name: str,
    size: int,
    draw: int,
    *,
    config: DWPBenchConfig,
    dwp: DeepWeightPrior | None,
    data,
):
    """The posterior of one (prior, size, draw) cell, its training set and its method."""
    pool_x, pool_y, _, _ = data
    x, y = training_set(
        pool_x, pool_y, size=size, draw=draw, seed=config.seed, stratified=config.stratified
    )
    torch.manual_seed(config.seed + draw)
    model = DWPCNN(prior=_prior(prior_name, dwp))
    if config.head_init == "xavier-normal":
        nn.init.xavier_normal_(model.net.head.weight)
    options = _fit_options(prior_name, config, size)
    return fit(model, x, y, seed=config.seed + draw, **options), x, y, options["method"]


def run_table_cell(
    prior_name: str,
    size: int,
    draw: int,
    *,
    config: DWPBenchConfig,
    dwp: DeepWeightPrior | None,
    data,
) -> dict[str, Any]:
    post, x, y, method = fit_cell(prior_name, size, draw, config=config, dwp=dwp, data=data)
    test_x, test_y = data[2], data[3]
    start = time.perf_counter()
    probs = post.predict(test_x, num_samples=None).probs
    return {
        "prior": prior_name,
        "size": size,
        "draw": draw,
        "method": method,
        "accuracy": accuracy(probs, test_y),
        "train_accuracy": accuracy(post.predict(x, num_samples=None).probs, y),
        "final_loss": float(np.mean(post.losses[0][-20:])),
        "fit_s": post.wall_time,
        "predict_s": time.perf_counter() - start,
    }


# -- stage "init" -----------------------------------------------------------------------


def _initialise(net: nn.Sequential, how: str, dwp: DeepWeightPrior | None) -> nn.Sequential:
    """The authors' ``weights_init``: Xavier-normal weights (biases at torch's default),
    then, for ``"dwp"``, each conv kernel at the decoder's mean for a latent draw."""
    for module in net.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            nn.init.xavier_normal_(module.weight)
    if how == "xavier":
        return net
    if how != "dwp":
        raise ValueError(f"unknown initialisation {how!r}")
    if dwp is None:
        raise ValueError("dwp initialisation needs the prior stage's prior")
    for layer, pattern in CONV_LAYERS.items():
        conv = getattr(net, layer)
        out_channels, in_channels = conv.weight.shape[:2]
        draws = dwp.layers[pattern].sample(out_channels * in_channels, mean=True)
        with torch.no_grad():
            conv.weight.copy_(draws.reshape(conv.weight.shape))
    return net


def run_init_experiments(
    config: DWPBenchConfig, dwp: DeepWeightPrior, data, *, progress: bool
) -> dict[str, Any]:
    """Fig. 4: a plain CNN trained on the whole pool, test accuracy after each epoch, with
    kernels from the prior or Xavier. Fig. 3: the convs frozen at that initialisation and
    only the last layer trained, for each width in ``feature_widths``."""
    pool_x, pool_y, test_x, test_y = data
    start = time.perf_counter()
    curves: dict[str, list[list[float]]] = {"dwp": [], "xavier": []}
    features: list[dict[str, Any]] = []
    runs = [(how, s) for s in range(config.init_seeds) for how in curves]
    for how, s in tqdm(runs, desc="init: training curves", disable=not progress):
        torch.manual_seed(config.seed + s)
        net = _initialise(cnn(), how, dwp)
        generator = torch.Generator().manual_seed(config.seed + s)
        curve = [_plain_accuracy(net.eval(), test_x, test_y)]
        for _ in range(config.init_epochs):
            _train_plain(
                net,
                pool_x,
                pool_y,
                epochs=1,
                batch_size=config.init_batch_size,
                lr=1e-3,
                generator=generator,
            )
            curve.append(_plain_accuracy(net, test_x, test_y))
        curves[how].append(curve)
    for widths in tqdm(config.feature_widths, desc="init: random features", disable=not progress):
        for how in ("dwp", "xavier"):
            scores = []
            for s in range(config.init_seeds):
                torch.manual_seed(config.seed + s)
                net = _initialise(cnn(widths=tuple(widths)), how, dwp)
                net.head.reset_parameters()
                _train_plain(
                    net,
                    pool_x,
                    pool_y,
                    epochs=config.feature_epochs,
                    batch_size=config.init_batch_size,
                    lr=1e-3,
                    generator=torch.Generator().manual_seed(config.seed + s),
                    params=net.head.parameters(),
                )
                scores.append(_plain_accuracy(net, test_x, test_y))
            features.append({"widths": list(widths), "init": how, "accuracy": scores})
    return {"curves": curves, "random_features": features, "wall_s": time.perf_counter() - start}


def curves_figure(init: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for how, runs in init["curves"].items():
        runs = np.asarray(runs)
        epochs = np.arange(runs.shape[1])
        ax.plot(epochs, runs.mean(0), marker="o", label=f"{how} (mean of {len(runs)})")
        ax.fill_between(epochs, runs.min(0), runs.max(0), alpha=0.2)
    ax.set(xlabel="epoch", ylabel="test accuracy", title="Initialising a CNN (Atanov Fig. 4)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- the run ----------------------------------------------------------------------------


def run_dwp_bench(
    config: DWPBenchConfig,
    *,
    out: Path,
    stages: tuple[str, ...] = STAGES,
    ship: Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run ``stages`` (skipping what ``out/results.json`` already holds) and write
    ``results.json``, ``results.md``, the prior and the figures to ``out/``; ``ship``: a
    path the prior is also written to (the library's is ``pyro_bnn/data/dwp_notmnist.pt``)."""
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stage(s) {sorted(unknown)}; choose from {list(STAGES)}")
    unknown = set(config.priors) - set(PRIORS)
    if unknown:
        raise ValueError(f"unknown prior(s) {sorted(unknown)}; choose from {list(PRIORS)}")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    fresh = {"config": config.record(), "table": [], "runs": []}
    document = harness.load_records(path, fresh=fresh, bench="dwp")
    harness.same_settings(document.get("config", {}), fresh["config"], path=path, what="results")
    prior_path = out / "dwp_notmnist.pt"
    run_start = time.perf_counter()
    # the run is on record from its start, so an interrupted one (the stages resume) is
    # dated, timed and placed in its report
    run = {"date": date.today().isoformat(), "stages": list(stages), "elapsed_s": 0.0}
    document["runs"].append(run)
    document["machine"] = harness.machine()

    def save() -> None:
        run["elapsed_s"] = time.perf_counter() - run_start
        harness.save(out, document, format_markdown(document))

    source = prior_path
    if not prior_path.exists() and "prior" in document and ship is not None and ship.exists():
        # the repository keeps one copy of a learned prior, the shipped one: resume from it
        # when out/ recorded its prior stage (a fresh out/ always learns its own)
        source = ship
    dwp = DeepWeightPrior.load(source) if source.exists() else None
    if "prior" in stages and dwp is None:
        dwp, kernels, document["prior"] = learn_prior(
            config, progress=progress, cache=out / "source_kernels.pt"
        )
        dwp.save(prior_path)
        kernels_figure(dwp, kernels, out / "kernels.png", seed=config.seed)
        save()
        log(f"prior: {_prior_summary(document['prior'])}")
    if ship is not None and dwp is not None:
        dwp.save(ship)
    data = mnist_pool_and_test(config) if {"table", "init"} & set(stages) else None
    if "table" in stages:
        done = {(r["prior"], r["size"], r["draw"]) for r in document["table"]}
        cells = [
            (p, n, d)
            for n in config.train_sizes
            for d in range(config.num_draws)
            for p in config.priors
            if (p, n, d) not in done
        ]
        log(f"table: {len(done)} cells done, {len(cells)} to run")
        with tqdm(total=len(cells), desc="bench dwp", disable=not progress) as bar:
            for prior_name, size, draw in cells:
                row = run_table_cell(prior_name, size, draw, config=config, dwp=dwp, data=data)
                document["table"].append(row)
                save()
                bar.write(
                    f"{prior_name:>11s} n={size:<5d} draw {draw}: accuracy "
                    f"{row['accuracy']:.3f}  {row['fit_s']:.0f}s"
                )
                bar.update()
    if "init" in stages and "init" not in document:
        if dwp is None:
            raise ValueError("the init stage needs the prior: run the prior stage first")
        document["init"] = run_init_experiments(config, dwp, data, progress=progress)
        curves_figure(document["init"], out / "init_curves.png")
    save()
    return document


def _prior_summary(prior: dict[str, Any]) -> str:
    accuracies = prior["source_test_accuracy"]
    parts = [f"source accuracy {np.mean(accuracies):.3f}" if accuracies else "kernel files"]
    for layer, entry in prior["layers"].items():
        parts.append(
            f"{layer}: {entry['kernels_total'] - entry['kernels_dropped']} of "
            f"{entry['kernels_total']} kernels kept"
        )
    return "; ".join(parts)


# -- the report -------------------------------------------------------------------------


def table_summary(
    rows: list[dict[str, Any]], *, field: str = "accuracy"
) -> dict[str, dict[int, tuple[float, float, int]]]:
    """prior -> size -> (mean, std, number of draws) of the test accuracy (or of another
    recorded ``field``, such as ``"train_accuracy"``)."""
    summary: dict[str, dict[int, tuple[float, float, int]]] = {}
    for row in rows:
        summary.setdefault(row["prior"], {}).setdefault(row["size"], []).append(row[field])
    return {
        prior: {
            size: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v))
            for size, v in sorted(sizes.items())
        }
        for prior, sizes in summary.items()
    }


def _filter_description(config: dict[str, Any]) -> str:
    if config.get("source_kernels"):
        return "The files' kernels were all kept (no norm filter)."
    ratios = " and ".join(f"{r:g}" for r in config["min_norm_ratio"])
    return f"Kernels with norm below {ratios} × the layer's median (conv1 and conv2) were dropped."


def _source_description(config: dict[str, Any], accuracies: list[float]) -> str:
    """Where the kernels came from: the source nets, or the kernel files given."""
    if config.get("source_kernels"):
        return f"Kernels read from {' and '.join(config['source_kernels'])} (no source nets)."
    return (
        f"{config['source_nets']} source CNNs ({config['source_widths'][0]} and "
        f"{config['source_widths'][1]} channels, {config['source_init']} initial weights) "
        f"on notMNIST ({config['source_epochs']} epochs, "
        f"batches of {config['source_batch_size']}, {_source_optimizer(config)}); their "
        f"test accuracy {np.mean(accuracies):.3f} (min {min(accuracies):.3f})."
    )


def _source_optimizer(config: dict[str, Any]) -> str:
    lr, decay = config["source_lr"], config["source_weight_decay"]
    schedule = " decayed linearly to 0" if config["source_lr_decay"] == "linear" else ""
    if config["source_optimizer"] == "adamw":
        return f"AdamW {lr:g}{schedule}, decoupled weight decay {decay:g}"
    return f"Adam {lr:g}{schedule}, {decay:g}·Σw² over the conv layers added to the loss"


_FIT_INIT = {"decoder-mean": "the decoder mean of a latent draw", "prior-draw": "prior draws"}


def _size_table_header(sizes: list[int]) -> list[str]:
    """The header rows of a table with one column per training-set size."""
    return harness.table_header("prior", *map(str, sizes))


def format_markdown(document: dict[str, Any]) -> str:
    config = document["config"]
    runs = document.get("runs", [])
    elapsed = sum(r["elapsed_s"] for r in runs)
    lines = [
        f"# Deep weight prior, MNIST with small training sets "
        f"({runs[-1]['date'] if runs else 'not run'}, {document.get('machine', '')})",
        "",
    ]
    if "prior" in document:
        prior = document["prior"]
        lines += [
            "### The prior",
            "",
            f"{_source_description(config, prior['source_test_accuracy'])} "
            f"{_filter_description(config)} Kernel VAEs with "
            f"{' and '.join(map(str, config['vae_layers']))} convolutions each way, Adam "
            f"{config['vae_lr']:g} decayed linearly to 0, batches of {config['vae_batch_size']}.",
            "",
            *harness.table_header(
                "layer", "kernel", "kernels", "dropped (threshold)", "median norm kept",
                "median norm of VAE draws", "VAE z", "VAE trained on", "VAE epochs",
                "VAE −ELBO / kernel", "VAE time",
            ),
        ]  # fmt: skip
        for i, (layer, e) in enumerate(prior["layers"].items()):
            lines.append(harness.table_row(
                layer, f"{e['kernel_size']}×{e['kernel_size']}", e["kernels_total"],
                f"{e['kernels_dropped']} ({e['norm_threshold']:.3g})",
                f"{e['kept_norm_median']:.3g}", f"{e['vae_sample_norm_median']:.3g}",
                config["vae_z_dim"][i], e["vae_training_kernels"], config["vae_epochs"][i],
                f"{e['vae_final_loss']:.2f}", f"{e['vae_s']:.0f} s",
            ))  # fmt: skip
        source_min = prior["source_s"] / 60
        source = "" if config.get("source_kernels") else f" (source nets {source_min:.1f} min)"
        lines.append(f"\nPrior stage {prior['wall_s'] / 60:.1f} min{source}.")
    if document.get("table"):
        summary = table_summary(document["table"])
        sizes = sorted({r["size"] for r in document["table"]})
        lines += [
            "",
            "### Test accuracy (10-sample ensemble; mean ± std over training-set draws)",
            "",
            f"{config['test_size']} test images; training sets drawn"
            f"{' stratified by class' if config['stratified'] else ''} from the other images, "
            f"{config['num_draws']} draws per size; {config['fit_steps']} steps of Adam "
            f"{config['lr']:g} → {config['final_lr']:g} ({config['lr_decay']}), batches of "
            f"{config['batch_size']}; dwp kernel means start at "
            f"{_FIT_INIT[config['fit_init']]}, its reverse model is the prior's encoder"
            f"{', trained' if config['train_reverse_model'] else ', frozen'}; the head starts "
            f"{'Xavier-normal' if config['head_init'] == 'xavier-normal' else 'at torch init'}. "
            "Paper: Atanov et al. 2019, Fig. 2a (mean over 10 draws).",
            "",
            *_size_table_header(sizes),
        ]
        for prior_name, by_size in summary.items():
            cells = [
                f"{by_size[n][0]:.3f} ± {by_size[n][1]:.3f}" if n in by_size else "–" for n in sizes
            ]
            lines.append(harness.table_row(prior_name, *cells))
            paper = [
                f"{PAPER[prior_name][n]:.3f}" if n in PAPER[prior_name] else "–" for n in sizes
            ]
            lines.append(harness.table_row(f"{prior_name} (paper)", *paper))
        train = table_summary(document["table"], field="train_accuracy")
        lines += [
            "",
            "Training accuracy of the same ensembles on their own training images "
            "(mean over draws; how closely each posterior fits the data it saw):",
            "",
            *_size_table_header(sizes),
        ]
        for prior_name, by_size in train.items():
            cells = [f"{by_size[n][0]:.3f}" if n in by_size else "–" for n in sizes]
            lines.append(harness.table_row(prior_name, *cells))
        fit_s = sum(r["fit_s"] + r["predict_s"] for r in document["table"])
        lines.append(f"\nTable cells: {fit_s / 60:.1f} min of fitting and prediction.")
    if "init" in document:
        init = document["init"]
        lines += [
            "",
            "### The prior as an initialiser",
            "",
            "Test accuracy of a plain CNN trained on the pool, after each epoch "
            "(mean over seeds; epoch 0 is at initialisation):",
            "",
            *harness.table_header(
                "init", *(f"epoch {i}" for i in range(len(init["curves"]["dwp"][0])))
            ),
        ]
        for how, curves in init["curves"].items():
            mean = np.mean(curves, axis=0)
            lines.append(harness.table_row(how, *(f"{a:.3f}" for a in mean)))
        lines += [
            "",
            "Random-feature extraction (convs frozen at initialisation, only the "
            "last layer trained):",
            "",
            *harness.table_header("widths", "init", "test accuracy"),
        ]
        for entry in init["random_features"]:
            lines.append(harness.table_row(
                f"{entry['widths'][0]}, {entry['widths'][1]}", entry["init"],
                f"{np.mean(entry['accuracy']):.3f}",
            ))  # fmt: skip
    lines.append(f"\nTotal wall time {elapsed / 60:.1f} min over {len(runs)} run(s).")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = harness.command(
        "dwp",
        "deep weight prior vs N(0, 1) and log-uniform on small MNIST training sets",
        data="mnist/ and notmnist/",
    )
    parser.add_argument("--stages", default="prior,table,init", help="any of prior, table, init")
    parser.add_argument(
        "--ship",
        default=None,
        metavar="PATH",
        help="also write the learned prior to PATH (the library's shipped prior: "
        "pyro_bnn/data/dwp_notmnist.pt)",
    )
    parser.add_argument(
        "--source-kernels",
        default=None,
        metavar="CONV1.npy,CONV2.npy",
        help="learn the prior from these kernel files (7×7, then 5×5) instead of training "
        "source nets, e.g. the authors' data/fconv/conv7x7/train.npy,conv5x5/train.npy",
    )
    parser.add_argument(
        "--card", default=None, help="model card whose result section gets the tables"
    )
    return parser


def _command(args: argparse.Namespace) -> int:
    if args.card:
        split_card(Path(args.card), bench="dwp")  # a card without its markers fails first
    options = {"data_dir": args.data_dir}
    if args.source_kernels:
        options["source_kernels"] = tuple(args.source_kernels.split(","))
    config = DWPBenchConfig.tiny(**options) if args.quick else DWPBenchConfig(**options)
    out = Path(args.out)
    ship = Path(args.ship) if args.ship else None
    document = run_dwp_bench(config, out=out, stages=tuple(harness.names(args.stages)),
                             ship=ship, progress=not args.no_progress)  # fmt: skip
    print(format_markdown(document))
    print(f"written to {out}/results.json, results.md, dwp_notmnist.pt and the figures")
    if ship is not None:
        print(f"the prior also written to {ship}")
    if args.card:
        update_card(Path(args.card), (out / "results.md").read_text(), bench="dwp")
        print(f"tables written into {args.card}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``pyro-bnn bench dwp …`` / ``python -m benchmarks.dwp …``."""
    return harness.main(build_parser(), _command, argv)
