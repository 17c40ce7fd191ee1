"""Posterior precision matrices of a Laplace approximation in four structures.

Each is M(s, d) = s·H + D: the likelihood's curvature H (GGN or empirical Fisher, computed
once; ``s`` rescales it, as a Gaussian noise variance does) plus the prior precision D
(a diagonal ``d``, or, for ``Full``, any symmetric matrix). Each structure gives, as
differentiable functions of ``s`` and ``d`` (which the evidence maximisation tunes):

- ``logdet(s, d)``: log det M;
- ``sample(s, d, n)``: n draws of N(0, M⁻¹);
- ``quad(s, d, J)``: J M⁻¹ Jᵀ for Jacobians J (rows, C, P), the linearised predictive's
  covariance of the network output.

All in float64. ``Kron`` and ``LowRank`` stay linear in the number of weights.

Example:
    >>> import torch
    >>> h = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    >>> d = torch.ones(2, dtype=torch.float64)
    >>> round(float(Full(h).logdet(1.0, d)), 6) == round(float(torch.logdet(h + torch.eye(2))), 6)
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Diagonal", "Full", "Kron", "KronBlock", "LowRank", "NotPositiveDefinite"]


class NotPositiveDefinite(ValueError):
    """The posterior precision is not positive definite at the mode."""


def _prior_matrix(d: torch.Tensor) -> torch.Tensor:
    return d if d.dim() == 2 else torch.diag(d)


@dataclass
class Full:
    """M = s·H + D as a dense (P, P) matrix."""

    h: torch.Tensor

    @property
    def size(self) -> int:
        return self.h.shape[0]

    def dense(self, s, d: torch.Tensor) -> torch.Tensor:
        return s * self.h + _prior_matrix(d)

    def _cholesky(self, s, d) -> torch.Tensor:
        factor, info = torch.linalg.cholesky_ex(self.dense(s, d))
        if int(info) != 0:
            raise NotPositiveDefinite(
                "the posterior precision is not positive definite at the MAP (the prior's "
                "curvature is negative or zero where the likelihood has none): use a "
                "Gaussian prior, or prior_precision=<number>"
            )
        return factor

    def logdet(self, s, d) -> torch.Tensor:
        return 2 * self._cholesky(s, d).diagonal().log().sum()

    def sample(self, s, d, n: int) -> torch.Tensor:
        factor = self._cholesky(s, d)
        eps = torch.randn(self.size, n, dtype=torch.float64)
        return torch.linalg.solve_triangular(factor.T, eps, upper=True).T

    def quad(self, s, d, jac: torch.Tensor) -> torch.Tensor:
        factor = self._cholesky(s, d)
        rows, outputs, size = jac.shape
        half = torch.linalg.solve_triangular(factor, jac.reshape(-1, size).T, upper=False)
        half = half.T.reshape(rows, outputs, size)
        return half @ half.transpose(-1, -2)


def _check_positive(values: torch.Tensor) -> torch.Tensor:
    if bool((values <= 0).any()):
        bad = int((values <= 0).sum())
        raise NotPositiveDefinite(
            f"the posterior precision is not positive at {bad} weight(s) at the MAP (the "
            "prior's curvature is negative or zero where the likelihood has none): use a "
            "Gaussian prior, or prior_precision=<number>"
        )
    return values


@dataclass
class Diagonal:
    """M = s·diag(h) + diag(d)."""

    h: torch.Tensor

    @property
    def size(self) -> int:
        return self.h.shape[0]

    def _diag(self, s, d) -> torch.Tensor:
        return _check_positive(s * self.h + d)

    def dense(self, s, d) -> torch.Tensor:
        return torch.diag(self._diag(s, d))

    def logdet(self, s, d) -> torch.Tensor:
        return self._diag(s, d).log().sum()

    def sample(self, s, d, n: int) -> torch.Tensor:
        return torch.randn(n, self.size, dtype=torch.float64) * self._diag(s, d).rsqrt()

    def quad(self, s, d, jac: torch.Tensor) -> torch.Tensor:
        return torch.einsum("ncp,p,ndp->ncd", jac, 1 / self._diag(s, d), jac)


@dataclass
class KronBlock:
    """One block of θ: ``kind`` "kron" (a weight (out, in): H ≈ G ⊗ A), "bias" (H ≈ G) or
    "diag" (H ≈ diag(h)); ``start``/``stop`` its place in θ; eigenpairs of A and G (for
    "diag", ``g_values`` holds h)."""

    kind: str
    start: int
    stop: int
    g_values: torch.Tensor
    g_vectors: torch.Tensor | None = None
    a_values: torch.Tensor | None = None
    a_vectors: torch.Tensor | None = None

    def eigenvalues(self, s, delta) -> torch.Tensor:
        """Eigenvalues of the block's precision, shaped (out, in), (out,) or (size,)."""
        if self.kind == "kron":
            return _check_positive(s * self.g_values[:, None] * self.a_values[None, :] + delta)
        return _check_positive(s * self.g_values + delta)


def _eigh(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    values, vectors = torch.linalg.eigh(matrix)
    return values.clamp_min(0), vectors


@dataclass
class Kron:
    """M ≈ block-diagonal over θ's blocks (:class:`KronBlock`); KFAC assumes the prior
    precision is the same within a block (it takes the block's mean of ``d``)."""

    blocks: list[KronBlock]
    size: int

    @classmethod
    def build(cls, blocks: list[tuple], size: int) -> Kron:
        """From ``(kind, start, stop, factors)``: for "kron" (A, G), "bias" (G,), "diag" (h,)."""
        built = []
        for kind, start, stop, factors in blocks:
            if kind == "kron":
                a_values, a_vectors = _eigh(factors[0])
                g_values, g_vectors = _eigh(factors[1])
                built.append(KronBlock(kind, start, stop, g_values, g_vectors, a_values, a_vectors))
            elif kind == "bias":
                g_values, g_vectors = _eigh(factors[0])
                built.append(KronBlock(kind, start, stop, g_values, g_vectors))
            else:
                built.append(KronBlock(kind, start, stop, factors[0].clamp_min(0)))
        return cls(built, size)

    def _delta(self, block: KronBlock, d: torch.Tensor) -> torch.Tensor:
        return d[block.start : block.stop].mean()

    def logdet(self, s, d) -> torch.Tensor:
        return sum(b.eigenvalues(s, self._delta(b, d)).log().sum() for b in self.blocks)

    def _rotate(self, block: KronBlock, z: torch.Tensor, *, forward: bool) -> torch.Tensor:
        """z (…, block size) into (``forward``) or out of the block's eigenbasis."""
        if block.kind == "diag":
            return z
        if block.kind == "bias":
            return z @ block.g_vectors if forward else z @ block.g_vectors.T
        out, inp = block.g_vectors.shape[0], block.a_vectors.shape[0]
        z = z.reshape(*z.shape[:-1], out, inp)
        g, a = block.g_vectors, block.a_vectors
        z = g.T @ z @ a if forward else g @ z @ a.T
        return z.reshape(*z.shape[:-2], out * inp)

    def sample(self, s, d, n: int) -> torch.Tensor:
        parts = []
        for block in self.blocks:
            values = block.eigenvalues(s, self._delta(block, d)).reshape(-1)
            eps = torch.randn(n, values.numel(), dtype=torch.float64) * values.rsqrt()
            parts.append(self._rotate(block, eps, forward=False))
        return torch.cat(parts, -1)

    def quad(self, s, d, jac: torch.Tensor) -> torch.Tensor:
        total = 0
        for block in self.blocks:
            values = block.eigenvalues(s, self._delta(block, d)).reshape(-1)
            rotated = self._rotate(block, jac[..., block.start : block.stop], forward=True)
            total = total + torch.einsum("ncp,p,ndp->ncd", rotated, 1 / values, rotated)
        return total

    def dense(self, s, d) -> torch.Tensor:
        matrix = torch.zeros(self.size, self.size, dtype=torch.float64)
        for block in self.blocks:
            values = block.eigenvalues(s, self._delta(block, d)).reshape(-1)
            basis = self._rotate(block, torch.eye(values.numel(), dtype=torch.float64),
                                 forward=False)  # fmt: skip
            matrix[block.start : block.stop, block.start : block.stop] = (
                basis.T @ torch.diag(values) @ basis
            )
        return matrix


@dataclass
class LowRank:
    """M = D^½ (I + (s/c) V diag(m) Vᵀ) D^½ with D = c·D₀: the top ``k`` eigenpairs (m, V)
    of the prior-whitened curvature D₀^{-½} H D₀^{-½}, the rest of the spectrum dropped.
    ``d`` must be a multiple c of ``d0`` (the evidence tunes c)."""

    values: torch.Tensor
    vectors: torch.Tensor
    d0: torch.Tensor

    @property
    def size(self) -> int:
        return self.d0.shape[0]

    def _scale(self, d) -> torch.Tensor:
        return (d / self.d0).mean()

    def _ratio(self, s, d) -> torch.Tensor:
        return s * self.values / self._scale(d)

    def logdet(self, s, d) -> torch.Tensor:
        c = self._scale(d)
        return self.d0.log().sum() + self.size * c.log() + self._ratio(s, d).log1p().sum()

    def sample(self, s, d, n: int) -> torch.Tensor:
        eps = torch.randn(n, self.size, dtype=torch.float64)
        shrink = 1 - self._ratio(s, d).add(1).rsqrt()
        eps = eps - ((eps @ self.vectors) * shrink) @ self.vectors.T
        return eps * (self._scale(d) * self.d0).rsqrt()

    def quad(self, s, d, jac: torch.Tensor) -> torch.Tensor:
        whitened = jac * (self._scale(d) * self.d0).rsqrt()
        ratio = self._ratio(s, d)
        projected = whitened @ self.vectors
        weights = ratio / (1 + ratio)
        return whitened @ whitened.transpose(-1, -2) - torch.einsum(
            "nck,k,ndk->ncd", projected, weights, projected
        )

    def dense(self, s, d) -> torch.Tensor:
        root = (self._scale(d) * self.d0).sqrt()
        inner = (
            torch.eye(self.size, dtype=torch.float64)
            + self.vectors @ torch.diag(self._ratio(s, d)) @ self.vectors.T
        )
        return root[:, None] * inner * root[None, :]
