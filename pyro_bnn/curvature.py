"""The curvature of a Pyro model's log-likelihood at one point, for Laplace approximations.

The model runs with every latent site fixed (``poutine.condition``) and a flat vector θ
for the sites being approximated. Its observed site's distribution has parameters u(θ)
per row (the mean, and the scale where the network predicts it; the logits) whose Fisher
information F(u) is known. The generalised Gauss-Newton (GGN) of the negative
log-likelihood is Σₙ Jₙᵀ Fₙ Jₙ with Jₙ = ∂uₙ/∂θ, the same whichever parameters u are used
(the Fisher transforms with the Jacobian), so no raw network output is needed; for the
Gaussian, Bernoulli and Categorical likelihoods it equals the exact GGN of
MacKay/Martens, for the heteroscedastic Gaussian it is the Fisher. The empirical Fisher
(``"ef"``) is Σₙ gₙgₙᵀ with gₙ = Jₙᵀ ∇ᵤ log p(yₙ | uₙ).

Jacobians come from ``torch.autograd.functional.jacobian`` (vectorised over the backward
pass) in row batches; Kronecker factors from the layer inputs and the Jacobian of u with
respect to zero "probes" added to each Linear layer's output through the ``layer_output``
effect (Martens & Grosse 2015).

Example:
    >>> import torch
    >>> from pyro_bnn import zoo
    >>> model = zoo.build("bayesian-linear-regression", in_features=2, noise_scale=0.5)
    >>> point = PointModel(model, {"linear.weight": torch.ones(1, 2),
    ...                            "linear.bias": torch.zeros(1)}, ["linear.weight", "linear.bias"])
    >>> x = torch.randn(10, 2)
    >>> bool(torch.allclose(point.ggn(x, None), 4 * torch.cat([x, torch.ones(10, 1)], 1).T.double()
    ...      @ torch.cat([x, torch.ones(10, 1)], 1).double(), atol=1e-4))
    True
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from pyro_bnn.init import trace_at_support_zero
from pyro_bnn.likelihoods import OBS_SITE
from pyro_bnn.priors import base_distribution

__all__ = ["Evaluation", "PointModel", "natural_parameters", "real_sites"]

_JACOBIAN_ENTRIES = 20_000_000  # rows × outputs × parameters held at once


class _Capture(Messenger):
    """Records the likelihood and its raw network output (the ``network_output`` effect),
    the Linear layers in call order, and, for the layers named in ``probes``, their inputs;
    adds each probe to its layer's output."""

    def __init__(self, probes: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        self.probes = probes or {}
        self.likelihood = None
        self.output: torch.Tensor | None = None
        self.layers: list[tuple[str, object]] = []
        self.inputs: dict[str, torch.Tensor] = {}
        self.shapes: dict[str, torch.Size] = {}  # each layer's output per row
        self.width = 0  # activations per row, summed over the layers

    def _pyro_post_network_output(self, msg) -> None:
        self.likelihood, self.output = msg["args"][0], msg["value"]

    def _pyro_post_layer_output(self, msg) -> None:
        module, x = msg["args"]
        self.layers.append((msg["name"], module))
        self.shapes[msg["name"]] = msg["value"].shape[1:]
        self.width += msg["value"][0].numel() if msg["value"].dim() > 1 else 1
        if msg["name"] in self.probes:
            self.inputs[msg["name"]] = x.detach()
            msg["value"] = msg["value"] + self.probes[msg["name"]]


def _patches(module, inputs: torch.Tensor) -> torch.Tensor:
    """A layer's inputs as (rows, features, locations): a Linear layer's, or a Conv2d's
    unfolded patches (in · kh · kw features, one column per output location)."""
    if inputs.dim() == 2:
        return inputs[:, :, None]
    return torch.nn.functional.unfold(
        inputs, module.kernel_size, dilation=module.dilation, padding=module.padding,
        stride=module.stride,
    )  # fmt: skip


def natural_parameters(fn: dist.Distribution) -> tuple[torch.Tensor, torch.Tensor]:
    """The parameters u (rows, K) of an observed distribution that the network sets, and
    their Fisher information per row (rows, K, K), detached.

    Normal: the mean, and the scale where it varies with the weights (F = diag(1/σ²,
    2/σ²)); Categorical: the logits (diag(p) − ppᵀ); Bernoulli: the logit (p(1 − p)).
    """
    base = base_distribution(fn)
    if isinstance(base, dist.Normal):
        loc, scale = torch.broadcast_tensors(base.loc, base.scale)
        precision = scale.detach().pow(-2)
        if base.scale.requires_grad:
            u = torch.stack([loc, scale], -1)
            fisher = torch.diag_embed(torch.stack([precision, 2 * precision], -1))
            return u, fisher
        return loc[..., None], precision[..., None, None]
    if isinstance(base, dist.Categorical):
        p = base.probs.detach()
        return base.logits, torch.diag_embed(p) - p[..., :, None] * p[..., None, :]
    if isinstance(base, dist.Bernoulli):
        p = base.probs.detach()
        return base.logits[..., None], (p * (1 - p))[..., None, None]
    raise ValueError(
        f"Laplace's curvature covers Normal, Categorical and Bernoulli observations; this "
        f"model's '{OBS_SITE}' site is {type(base).__name__}"
    )


def _score(fn: dist.Distribution, y: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """∇ᵤ log p(yₙ | uₙ) per row (rows, K), detached, in the parameters of
    :func:`natural_parameters`."""
    base = base_distribution(fn)
    if isinstance(base, dist.Normal):
        loc, scale = torch.broadcast_tensors(base.loc.detach(), base.scale.detach())
        residual = y - loc
        columns = [residual / scale**2]
        if u.shape[-1] == 2:
            columns.append(-1 / scale + residual**2 / scale**3)
        return torch.stack(columns, -1)
    if isinstance(base, dist.Categorical):
        return torch.nn.functional.one_hot(y, u.shape[-1]).to(u.dtype)  # normalised logits
    return (y - base.probs.detach())[..., None]


@dataclass
class Evaluation:
    """The observed distribution's parameters u (rows, K), their Fisher (rows, K, K), the
    score ∇ᵤ log p(y | u) (rows, K; None without y), log p(yₙ | θ) (rows; None without y),
    the raw network output (rows, C) and the likelihood object that received it (None for
    a model that does not use :mod:`pyro_bnn.likelihoods`)."""

    u: torch.Tensor
    fisher: torch.Tensor
    score: torch.Tensor | None
    log_lik: torch.Tensor | None
    raw: torch.Tensor | None
    likelihood: object | None
    capture: _Capture


def _rows(output: torch.Tensor | None, rows: int) -> torch.Tensor | None:
    """The raw output as (rows, C)."""
    if output is None:
        return None
    return output.reshape(rows, -1)


class PointModel:
    """``model`` with its latent sites fixed at ``values``, the sites named in ``subset``
    read from a flat vector θ (constrained = unconstrained: they must be real-valued).

    ``theta`` is the flat vector of ``values`` on ``subset`` (float64 copies are taken
    where curvature is accumulated)."""

    def __init__(self, model, values: dict[str, torch.Tensor], subset: Sequence[str]) -> None:
        self.model = model
        self.values = {k: v.detach() for k, v in values.items()}
        self.names = tuple(subset)
        self.shapes = tuple(self.values[name].shape for name in self.names)
        self.sizes = tuple(int(torch.Size(s).numel()) for s in self.shapes)
        self.theta = torch.cat([self.values[name].reshape(-1) for name in self.names])

    @property
    def size(self) -> int:
        return int(self.theta.numel())

    def slices(self) -> dict[str, slice]:
        """Where each site sits in θ."""
        out, start = {}, 0
        for name, size in zip(self.names, self.sizes, strict=True):
            out[name] = slice(start, start + size)
            start += size
        return out

    def split(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """Site values of a flat θ (..., P)."""
        batch = theta.shape[:-1]
        return {
            name: theta[..., s].reshape(*batch, *shape)
            for (name, s), shape in zip(self.slices().items(), self.shapes, strict=True)
        }

    def _trace(self, theta, x, y, capture: _Capture):
        values = {**self.values, **self.split(theta)}
        with capture:
            return poutine.trace(poutine.condition(self.model, data=values)).get_trace(x, y)

    def evaluate(
        self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor | None = None,
        probes: dict[str, torch.Tensor] | None = None,
    ) -> Evaluation:  # fmt: skip
        """Run the model at θ on rows ``x`` (and targets ``y``)."""
        capture = _Capture(probes)
        trace = self._trace(theta, x, y, capture)
        node = trace.nodes[OBS_SITE]
        u, fisher = natural_parameters(node["fn"])
        rows = len(x)
        u, fisher = u.reshape(rows, -1), fisher.reshape(rows, u.shape[-1], u.shape[-1])
        score = log_lik = None
        if y is not None:
            score = _score(node["fn"], node["value"], u).reshape(rows, -1)
            log_lik = node["fn"].log_prob(node["value"]).detach().reshape(rows)
        return Evaluation(
            u, fisher.detach(), score, log_lik, _rows(capture.output, rows),
            capture.likelihood, capture,
        )  # fmt: skip

    def log_prior(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(θ) of the subset's sites under the model's own priors (``x``: any rows)."""
        trace = self._trace(theta, x[:1], None, _Capture())
        return sum(trace.nodes[name]["fn"].log_prob(trace.nodes[name]["value"]).sum()
                   for name in self.names)  # fmt: skip

    def prior_curvature(self, x: torch.Tensor, *, full: bool) -> torch.Tensor:
        """−∇² log p(θ) at θ, float64: the whole matrix (``full``) or its diagonal,
        exact for priors that factorise over the weights within each site (every prior
        of :mod:`pyro_bnn.priors`)."""
        theta = self.theta.clone()

        def log_prior(theta):
            return self.log_prior(theta, x)

        if full:
            return -torch.autograd.functional.hessian(log_prior, theta).double()
        _, hvp = torch.autograd.functional.hvp(log_prior, theta, torch.ones_like(theta))
        return -hvp.double()

    def row_batches(self, rows: int, outputs: int, width: int = 0) -> Iterator[slice]:
        """Row batches whose Jacobian (rows × outputs × P) and vectorised backward pass
        (rows × outputs cotangents, each as wide as rows × ``width`` activations) both stay
        within ``_JACOBIAN_ENTRIES`` numbers."""
        size = _JACOBIAN_ENTRIES // max(outputs * self.size, 1)
        if width:
            size = min(size, int((_JACOBIAN_ENTRIES / (outputs * width)) ** 0.5))
        size = max(1, size)
        for start in range(0, rows, size):
            yield slice(start, min(start + size, rows))

    def jacobian(
        self, x: torch.Tensor, y: torch.Tensor | None = None, *, raw: bool = False
    ) -> tuple[torch.Tensor, Evaluation]:
        """J = ∂u/∂θ (rows, K, P) at θ, or of the raw network output (``raw``), and the
        evaluation at θ."""
        evaluation = self.evaluate(self.theta, x, y)
        target = evaluation.raw if raw else evaluation.u
        if target is None:
            raise ValueError(
                "the linearised predictive needs a model whose likelihood is one of "
                "pyro_bnn.likelihoods (it reads the raw network output); use predictive='mc'"
            )

        def outputs(theta):
            result = self.evaluate(theta, x, y)
            return result.raw if raw else result.u

        jac = torch.autograd.functional.jacobian(outputs, self.theta, vectorize=True)
        return jac.detach(), evaluation

    def chunks(
        self, x: torch.Tensor, y: torch.Tensor | None, *, raw: bool = False
    ) -> Iterator[tuple[slice, torch.Tensor, Evaluation]]:
        """:meth:`jacobian` over row batches that bound its memory: (rows, J, evaluation)."""
        outputs = self.evaluate(self.theta, x[:1], None)
        columns = (outputs.raw if raw and outputs.raw is not None else outputs.u).shape[-1]
        for rows in self.row_batches(len(x), columns, outputs.capture.width):
            yield (rows, *self.jacobian(x[rows], None if y is None else y[rows], raw=raw))

    def ggn(self, x: torch.Tensor, y: torch.Tensor | None, *, empirical: bool = False):
        """The full GGN Σ Jᵀ F J (or empirical Fisher Σ g gᵀ) of −log p(y | θ), (P, P) float64."""
        total = torch.zeros(self.size, self.size, dtype=torch.float64)
        for _, jac, ev in self.chunks(x, y):
            jac = jac.double()
            if empirical:
                grads = torch.einsum("nkp,nk->np", jac, ev.score.double())
                total += grads.T @ grads
            else:
                total += torch.einsum("nkp,nkl,nlq->pq", jac, ev.fisher.double(), jac)
        return total

    def ggn_diagonal(self, x: torch.Tensor, y: torch.Tensor | None, *, empirical: bool = False):
        """The diagonal of :meth:`ggn`, (P,) float64, without forming the matrix."""
        total = torch.zeros(self.size, dtype=torch.float64)
        for _, jac, ev in self.chunks(x, y):
            jac = jac.double()
            if empirical:
                total += torch.einsum("nkp,nk->np", jac, ev.score.double()).pow(2).sum(0)
            else:
                total += torch.einsum("nkp,nkl,nlp->p", jac, ev.fisher.double(), jac)
        return total

    def ggn_matvec(self, x: torch.Tensor, y: torch.Tensor | None, *, empirical: bool = False):
        """v ↦ (Σ Jᵀ F J) v (or Σ g gᵀ v), matrix-free: one forward, a Jacobian-vector and
        a vector-Jacobian product per row batch."""
        first = self.evaluate(self.theta, x[:1], None)
        # a product holds no Jacobian: its memory is the rows' activations and outputs
        size = _JACOBIAN_ENTRIES // max(first.u.shape[-1] * (first.capture.width or 1), 1)
        size = max(1, min(size, len(x)))
        batches = [slice(start, min(start + size, len(x))) for start in range(0, len(x), size)]

        def matvec(vector: torch.Tensor) -> torch.Tensor:
            vector = vector.to(self.theta.dtype)
            total = torch.zeros(self.size, dtype=torch.float64)
            for rows in batches:
                xs, ys = x[rows], None if y is None else y[rows]
                ev = self.evaluate(self.theta, xs, ys)

                def outputs(theta, xs=xs, ys=ys):
                    return self.evaluate(theta, xs, ys).u

                _, jv = torch.autograd.functional.jvp(outputs, self.theta, vector)
                if empirical:
                    weights = ev.score * (ev.score * jv).sum(-1, keepdim=True)
                else:
                    weights = torch.einsum("nkl,nl->nk", ev.fisher, jv)
                _, back = torch.autograd.functional.vjp(outputs, self.theta, weights)
                total += back.double()
            return total

        return matvec

    def kron_factors(self, x: torch.Tensor, y: torch.Tensor | None, *, empirical: bool = False):
        """KFAC factors of the GGN (or empirical Fisher) for each Linear and Conv2d layer
        whose weight is in the subset: ``{layer: (A, G, L)}`` with the weight block
        ≈ G ⊗ A (weight (out, in, …) flattened row-major) and the bias block ≈ L·G, L the
        layer's output locations (1 for Linear, whose bias block is then exact).

        A = (1/N) Σₙ Σₗ aₙₗaₙₗᵀ over the layer's inputs (Conv2d: its unfolded patches),
        G = (1/L) Σₙ Σₗ Bₙₗᵀ Fₙ Bₙₗ with Bₙₗ = ∂uₙ/∂sₙₗ (sₙₗ the layer's output at
        location l), or (1/L) Σₙ Σₗ (Bₙₗᵀ rₙ)(Bₙₗᵀ rₙ)ᵀ for the empirical Fisher (Martens &
        Grosse 2015; for convolutions Grosse & Martens 2016, locations as extra samples)."""
        layers = self.kron_layers(x)
        shapes = self.evaluate(self.theta, x[:1], None).capture.shapes
        factors: dict[str, list[torch.Tensor]] = {}
        for rows in self.row_batches(len(x), 1):
            xs, ys = x[rows], None if y is None else y[rows]
            probes = {name: torch.zeros(len(xs), *shapes[name], requires_grad=True)
                      for name in layers}  # fmt: skip
            ev = self.evaluate(self.theta, xs, ys, probes=probes)
            columns = ev.u.shape[-1]
            backs = {name: [] for name in layers}  # one backward pass per column of u
            for k in range(columns):
                grads = torch.autograd.grad(
                    ev.u[:, k].sum(), list(probes.values()), retain_graph=k < columns - 1,
                    allow_unused=True, materialize_grads=True,
                )  # fmt: skip
                for name, grad in zip(layers, grads, strict=True):
                    backs[name].append(grad)
            for name, module in layers.items():
                # B: (rows, K, out, locations)
                b = (
                    torch.stack(backs[name], 1)
                    .double()
                    .reshape(len(xs), columns, shapes[name][0], -1)
                )
                locations = b.shape[-1]
                if empirical:
                    g = torch.einsum("nkol,nk->nol", b, ev.score.double())
                    g_factor = torch.einsum("nol,npl->op", g, g) / locations
                else:
                    g_factor = torch.einsum("nkol,nkj,njpl->op", b, ev.fisher.double(), b)
                    g_factor = g_factor / locations
                a = _patches(module, ev.capture.inputs[name]).double()  # (rows, in, locations)
                update = [torch.einsum("nil,njl->ij", a, a), g_factor]
                factors[name] = update if name not in factors else [
                    old + new for old, new in zip(factors[name], update, strict=True)
                ]  # fmt: skip
        locations = {name: int(torch.Size(shapes[name][1:]).numel()) for name in layers}
        return {name: (a / len(x), g, locations[name]) for name, (a, g) in factors.items()}

    def kron_layers(self, x: torch.Tensor) -> dict[str, object]:
        """The Linear and Conv2d layers (through ``layer_output``) whose weight is in the
        subset, in call order."""
        from pyro_bnn.layers import Conv2d, Linear

        ev = self.evaluate(self.theta, x[:1], None)
        layers = {}
        for name, module in ev.capture.layers:
            if not isinstance(module, Linear | Conv2d) or f"{name}.weight" not in self.names:
                continue
            if isinstance(module, Conv2d) and (
                module.groups != 1 or isinstance(module.padding, str)
                or module.padding_mode != "zeros"
            ):  # fmt: skip
                raise ValueError(
                    f"hessian_structure='kron' covers Conv2d with one group and numeric zero "
                    f"padding; layer '{name}' has groups={module.groups}, padding="
                    f"{module.padding!r} ({module.padding_mode}): use 'diag'"
                )
            layers[name] = module
        return layers

    def last_layer(self, x: torch.Tensor) -> str | None:
        """The name of the last layer called through ``layer_output`` (None if none)."""
        ev = self.evaluate(self.theta, x[:1], None)
        return ev.capture.layers[-1][0] if ev.capture.layers else None


def real_sites(model, x, y) -> tuple[list[str], list[str], str | None]:
    """The model's real-valued latent sites (Laplace's), its other latent sites, and the
    last layer it calls through ``layer_output``."""
    with _Capture() as capture:
        trace = trace_at_support_zero(model, x[:2], y[:2])
    real, other = [], []
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or site_is_subsample(site):
            continue
        support = site["fn"].support
        while isinstance(support, constraints.independent):
            support = support.base_constraint
        (real if support is constraints.real else other).append(name)
    last = capture.layers[-1][0] if capture.layers else None
    return real, other, last
