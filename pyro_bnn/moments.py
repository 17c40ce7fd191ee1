"""Moment propagation through Linear layers and ReLU under a mean-field Gaussian posterior.

Deterministic variational inference (Wu et al. 2019) replaces the Monte Carlo estimate of
E_q[log p(y | f(x; w))] by propagating the mean and covariance of each layer's activations
through the network. A Linear layer with independent Gaussian weights W ~ N(M, S²) and
bias b ~ N(m_b, s_b²) maps activations with mean m and covariance C to pre-activations
with mean M m + m_b and covariance M C Mᵀ + diag(S² (diag C + m²) + s_b²): exact for
any distribution of the activations. A ReLU of a Gaussian has closed-form moments: the
rectified Gaussian's mean and variance for each unit, and for each pair of units the
orthant moments of a bivariate Gaussian (Rosenbaum 1961), whose orthant probability is a
one-dimensional integral (Plackett 1954) taken here by Gauss-Legendre quadrature.
Treating each layer's pre-activations as Gaussian is the method's one approximation.

The ``diagonal`` variant keeps variances only (independent units); ``full`` keeps the
covariance between the units of a layer, per input row.

Example:
    >>> import torch
    >>> mean, var = relu_moments(torch.tensor([0.0]), torch.tensor([1.0]))
    >>> round(float(mean), 4), round(float(var), 4)
    (0.3989, 0.3408)
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["linear_moments", "relu_covariance", "relu_moments"]

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
_NODES, _WEIGHTS = (torch.from_numpy(a) for a in np.polynomial.legendre.leggauss(24))


def _pdf(z: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * z.square() - _LOG_SQRT_2PI)


def _cdf(z: torch.Tensor) -> torch.Tensor:
    return torch.special.ndtr(z)


def relu_moments(mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of max(0, a) for a ~ N(mean, var), elementwise."""
    sd = var.clamp_min(1e-30).sqrt()
    alpha = mean / sd
    cdf, pdf = _cdf(alpha), _pdf(alpha)
    first = mean * cdf + sd * pdf
    second = (mean.square() + var) * cdf + mean * sd * pdf
    return first, (second - first.square()).clamp_min(0.0)


def _orthant_probability(a: torch.Tensor, b: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """P(U > a, V > b) for standard bivariate normal (U, V) with correlation ``rho``:
    Φ(−a)Φ(−b) + ∫₀^ρ φ₂(a, b; r) dr, integrated over θ = arcsin r, where the integrand
    exp(−(a² − 2ab sin θ + b²) / (2 cos² θ)) / 2π is smooth and bounded."""
    top = torch.asin(rho.clamp(-1.0, 1.0))
    nodes = _NODES.to(a.dtype)
    weights = _WEIGHTS.to(a.dtype)
    theta = top[..., None] * (nodes + 1) / 2
    sin, cos2 = torch.sin(theta), torch.cos(theta).square().clamp_min(1e-30)
    a_, b_ = a[..., None], b[..., None]
    integrand = torch.exp(-(a_.square() - 2 * a_ * b_ * sin + b_.square()) / (2 * cos2))
    integral = (integrand * weights).sum(-1) * top / 2 / (2 * math.pi)
    return _cdf(-a) * _cdf(-b) + integral


def relu_covariance(mean: torch.Tensor, cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (..., n) and covariance (..., n, n) of max(0, a) for a ~ N(mean, cov).

    Off the diagonal: E[X⁺Y⁺] from the truncated moments of a bivariate Gaussian; on the
    diagonal: the rectified Gaussian's variance (:func:`relu_moments`)."""
    var = torch.diagonal(cov, dim1=-2, dim2=-1)
    sd = var.clamp_min(1e-30).sqrt()
    first, variance = relu_moments(mean, var)
    s_x, s_y = sd[..., :, None], sd[..., None, :]
    m_x, m_y = mean[..., :, None], mean[..., None, :]
    rho = (cov / (s_x * s_y)).clamp(-1 + 1e-6, 1 - 1e-6)
    a, b = -m_x / s_x, -m_y / s_y  # X > 0 ⟺ U > a
    c = (1 - rho.square()).sqrt()
    q_ab = _cdf(-(b - rho * a) / c)  # P(V > b | U = a)
    q_ba = _cdf(-(a - rho * b) / c)
    pa, pb = _pdf(a), _pdf(b)
    orthant = _orthant_probability(a, b, rho)
    e_u = pa * q_ab + rho * pb * q_ba
    e_v = pb * q_ba + rho * pa * q_ab
    quadratic = (a.square() - 2 * rho * a * b + b.square()) / c.square()
    density = c * _pdf(quadratic.sqrt()) / math.sqrt(2 * math.pi)  # (1 − ρ²) φ₂(a, b; ρ)
    e_uv = rho * orthant + rho * (a * pa * q_ab + b * pb * q_ba) + density
    product = m_x * m_y * orthant + m_x * s_y * e_v + m_y * s_x * e_u + s_x * s_y * e_uv
    out = product - first[..., :, None] * first[..., None, :]
    eye = torch.eye(mean.shape[-1], dtype=torch.bool, device=mean.device)
    out = torch.where(eye, torch.diag_embed(variance), out)
    return first, out


def linear_moments(
    mean: torch.Tensor,
    second: torch.Tensor,
    *,
    weight_loc: torch.Tensor,
    weight_scale: torch.Tensor,
    bias_loc: torch.Tensor | None,
    bias_scale: torch.Tensor | None,
    full: bool,
    output_covariance: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pre-activation moments of a Linear layer with independent Gaussian weights.

    ``mean`` (rows, in); ``second`` the input's covariance (rows, in, in) if ``full``,
    else its variance (rows, in). Returns the output's mean (rows, out) and covariance
    (rows, out, out) if ``full`` or ``output_covariance``, else its variance (rows, out)."""
    out_mean = mean @ weight_loc.T
    if bias_loc is not None:
        out_mean = out_mean + bias_loc
    var_in = torch.diagonal(second, dim1=-2, dim2=-1) if full else second
    noise = (var_in + mean.square()) @ weight_scale.square().T  # Σ_i S²_ki E[h_i²]
    if bias_scale is not None:
        noise = noise + bias_scale.square()
    if full:
        return out_mean, weight_loc @ second @ weight_loc.T + torch.diag_embed(noise)
    if output_covariance:  # independent inputs: Σ_i M_ki M_li var_i, per row
        scaled = weight_loc * var_in[..., None, :]  # (rows, out, in)
        return out_mean, scaled @ weight_loc.T + torch.diag_embed(noise)
    return out_mean, var_in @ weight_loc.square().T + noise
