"""Convergence checks shared by every method: R-hat and ESS over draws laid out as
(chain, draw, ...), with the warnings they raise.

Example:
    >>> import numpy as np
    >>> sorted(row_diagnostics(np.random.default_rng(0).normal(size=(2, 200, 3))))
    ['max_rhat', 'min_ess']
"""

from __future__ import annotations

import warnings
from types import ModuleType

import numpy as np
import torch

__all__ = [
    "MIN_ESS_PER_CHAIN",
    "RHAT_THRESHOLD",
    "ConvergenceWarning",
    "SamplingWarning",
    "data_scale",
    "import_arviz",
    "issue_warnings",
    "loss_diagnostics",
    "mixing_diagnostics",
    "noise_diagnostics",
    "not_finite_at_start",
    "potential_diagnostics",
    "row_diagnostics",
]

# a learned noise scale this many times the targets' root mean square has exploded
NOISE_EXPLOSION = 100.0
# Vehtari et al. 2021: R-hat below 1.01 and a bulk ESS of at least 100 per chain
RHAT_THRESHOLD = 1.01
MIN_ESS_PER_CHAIN = 100


class SamplingWarning(UserWarning):
    """A sampler's diagnostics suggest its draws do not represent the posterior."""


class ConvergenceWarning(UserWarning):
    """An optimisation (SVI, MAP, an ensemble member) ran away or stopped before converging."""


def import_arviz() -> ModuleType:
    """ArviZ, imported on first use (it takes a second or more, with matplotlib and
    scipy), without the once-a-day FutureWarning about its refactor that its import
    prints: the user of pyro_bnn did not import it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"arviz(\.|$)")
        import arviz

    return arviz


def loss_diagnostics(losses: list[float], *, method: str) -> tuple[dict[str, float], list[str]]:
    """Whether a loss history converged: the mean loss of the first and last tenths, and
    the fall over the last tenth (first half of it minus second half) against its noise.

    It warns when the last tenth sits above the start (the first hundredth: the run went
    the wrong way, a step size too large or a prior that fights the data), when the last
    tenth oscillates by more than a quarter of the fall from the start to the best loss
    (a step size too large), or when the loss still falls over the
    last tenth by more than 0.5 % of the whole run's fall and by more than 3 standard errors of
    that difference (stopped early: more steps or a larger learning rate). The noise of
    each half's mean comes from consecutive differences, so a smooth trend is not noise.

    Example:
        >>> import math
        >>> falling = [1000 * math.exp(-t / 300) for t in range(1000)]
        >>> loss_diagnostics(falling, method="map")[1][0][:40]
        'map: the loss was still falling over the'
    """
    values = np.asarray(losses, dtype=np.float64)
    n = len(values)
    if n < 40:  # too short to split its last tenth in halves of several steps
        return {}, []
    tenth = n // 10
    first, last = values[:tenth], values[-tenth:]
    early, late = last[: tenth // 2], last[tenth // 2 :]
    fall = float(early.mean() - late.mean())
    # step-to-step noise from consecutive differences (blind to a smooth trend)
    step_sd = float(np.diff(last).std(ddof=1)) / np.sqrt(2)
    noise = step_sd * float(np.sqrt(1 / len(early) + 1 / len(late)))
    whole = float(first.mean() - last.mean())
    start = float(values[: max(1, n // 100)].mean())
    best = float(values.min())
    diagnostics = {
        "loss_start": start,
        "loss_first_tenth": float(first.mean()),
        "loss_last_tenth": float(last.mean()),
        "loss_fall_last_tenth": fall,
    }
    found = []
    if last.mean() > start + 3 * step_sd / np.sqrt(tenth):
        found.append(
            f"{method}: the loss ran away: its last tenth averages {last.mean():.4g}, above its "
            f"start {start:.4g}; lower lr, or check the prior's scale"
        )
    elif start > best and last.std() > 0.25 * (start - best):
        found.append(
            f"{method}: the loss oscillates over its last tenth (sd {last.std():.4g} against "
            f"a fall of {start - best:.4g} from its start to its best); lower lr"
        )
    elif whole > 0 and fall > 0.005 * whole and fall > 3 * noise:
        found.append(
            f"{method}: the loss was still falling over the last tenth of the run "
            f"({early.mean():.4g} to {late.mean():.4g}); it has not converged: raise "
            "num_steps (or lr)"
        )
    return diagnostics, found


def data_scale(x: torch.Tensor, y: torch.Tensor) -> str:
    """The data's largest magnitudes, for messages about a fit that is not finite."""
    y_max = float(y.abs().max()) if torch.is_floating_point(y) else float(y.max())
    return f"x (largest |x| {float(x.abs().max()):.3g}) and y (largest |y| {y_max:.3g})"


def not_finite_at_start(method: str, what: str, x: torch.Tensor, y: torch.Tensor) -> str:
    """What to say when a fit is not finite before its first step: no step size is to
    blame, the model's density at its initial values is, usually for data on a huge scale."""
    return (
        f"the {method} {what} is not finite at the start, before any step: the model's log "
        f"density is not finite at its initial values; check the scale of {data_scale(x, y)}: "
        "standardise them"
    )


def noise_diagnostics(
    noise_sd: np.ndarray, y: torch.Tensor, *, method: str, remedy: str
) -> tuple[dict[str, float], list[str]]:
    """Whether a learned noise scale exploded: ``noise_sd`` holds the likelihood's noise
    sd (median over rows) at each of a chain's draws. A model that predicted 0 everywhere
    would need a noise sd of only rms(y); a draw whose noise sd exceeds
    ``NOISE_EXPLOSION`` (100) times that explains the data worse than no model by a
    margin no posterior of 10 or more rows supports (at N rows, N·ln 100 nats).

    Example:
        >>> import torch
        >>> found = noise_diagnostics(np.array([0.1, 6e6]), torch.ones(20), method="csghmc",
        ...                           remedy="lower step_size")[1]
        >>> found[0][:37]
        'csghmc: the noise scale exploded in 1'
    """
    scale = float(y.double().pow(2).mean().sqrt())
    noise_sd = np.asarray(noise_sd, dtype=np.float64)
    diagnostics = {
        "noise_sd_median": float(np.median(noise_sd)),
        "noise_sd_max": float(noise_sd.max()),
        "y_rms": scale,
    }
    if len(y) < 10 or scale == 0:
        return diagnostics, []
    exploded = ~(noise_sd <= NOISE_EXPLOSION * scale)  # NaN counts as exploded
    diagnostics["noise_exploded_fraction"] = float(exploded.mean())
    if not exploded.any():
        return diagnostics, []
    return diagnostics, [
        f"{method}: the noise scale exploded in {int(exploded.sum())} of {len(noise_sd)} "
        f"draws checked (up to {noise_sd.max():.3g}, median {np.median(noise_sd):.3g}, "
        f"against y's root mean square {scale:.3g}); {remedy}"
    ]


def potential_diagnostics(
    start: float, kept: np.ndarray, *, groups: int, dim: int, method: str, remedy: str
) -> tuple[dict[str, float], list[str]]:
    """Whether a sampler's potential ran away: ``kept`` holds the potential U at each kept
    draw, in ``groups`` equal runs (the cycles of a cyclical sampler, else one), ``start``
    the mean U over the first steps (usually a draw from the prior, far above the
    posterior's U). A group whose median U exceeds the start by more than
    max(|start|, 10·dim) has run away: at the posterior U stays within a few dim/2 of its
    minimum.

    Example:
        >>> potential_diagnostics(100.0, np.array([1e9, 2e9]), groups=1, dim=3,
        ...                       method="sgld", remedy="lower step_size")[1][0][:31]
        'sgld: the potential ran away: i'
    """
    kept = np.asarray(kept, dtype=np.float64).reshape(groups, -1)
    medians = np.median(kept, axis=1)
    limit = start + max(abs(start), 10.0 * dim)
    diagnostics = {"potential_start": float(start), "potential_kept_median": float(np.median(kept))}
    bad = [i for i, m in enumerate(medians) if not m <= limit]  # NaN counts as bad
    if not bad:
        return diagnostics, []
    where = "" if groups == 1 else f" in cycle(s) {', '.join(str(i + 1) for i in bad)}"
    return diagnostics, [
        f"{method}: the potential ran away{where}: its median over the kept draws "
        f"({', '.join(f'{medians[i]:.3g}' for i in bad)}) is far above its start "
        f"({start:.3g}); {remedy}"
    ]


def row_diagnostics(values: np.ndarray) -> dict[str, float]:
    """``min_ess`` and ``max_rhat`` over the last axis of draws shaped (chain, draw, rows).

    ArviZ's R-hat needs two chains; a single chain is compared across its two halves
    (which R-hat's own splitting then halves again). Coordinates that hold the same value
    in every draw (a weight dropout always keeps at zero, a site held at its MAP) have no
    R-hat or ESS and are left out.
    """
    az = import_arviz()
    values = np.asarray(values)
    flat = values.reshape(-1, values.shape[-1])
    varying = ~(flat == flat[:1]).all(0)
    if varying.any() and not varying.all():
        values = values[..., varying]
    dataset = az.convert_to_dataset({"f": values}, dims={"f": ["row"]})
    if values.shape[0] == 1:
        half = values.shape[1] // 2
        values = np.stack([values[0, :half], values[0, half : 2 * half]])
    halves = az.convert_to_dataset({"f": values}, dims={"f": ["row"]})
    return {
        "min_ess": float(az.ess(dataset)["f"].min()),
        "max_rhat": float(az.rhat(halves)["f"].max()),
    }


def mixing_diagnostics(
    draws: dict[str, torch.Tensor],
    sample_stats: dict[str, np.ndarray],
    *,
    method: str,
    warn: bool,
) -> tuple[dict[str, float | str], list[str]]:
    """Divergences, the worst R-hat and the smallest bulk ESS over every latent coordinate.

    With ``warn`` (a sampler, whose draws should represent the posterior), each figure that
    fails its threshold gives a message, also issued as a :class:`SamplingWarning`. With one
    chain, R-hat compares the chain's two halves. Fewer than 4 draws per chain: R-hat and
    ESS are not defined, and the diagnostics say so.
    """
    num_chains, num_draws = next(iter(draws.values())).shape[:2]
    diagnostics: dict[str, float | str] = {}
    found: list[str] = []
    if "diverging" in sample_stats:
        diagnostics["divergences"] = int(sample_stats["diverging"].sum())
        if diagnostics["divergences"]:
            found.append(
                f"{method}: {diagnostics['divergences']} divergent transitions of "
                f"{num_chains * num_draws}; raise target_accept_prob or reparameterise"
            )
    # a site held fixed (the same value in every draw: the body of a last-layer Laplace
    # approximation, a noise at its MAP) has no R-hat or ESS
    varying = {
        name: value for name, value in draws.items()
        if not bool((value == value.reshape(-1, *value.shape[2:])[0]).all())
    }  # fmt: skip
    if num_draws < 4:
        diagnostics["rhat_ess"] = (
            f"not applicable: {num_draws} draw(s) per chain (R-hat and ESS need several)"
        )
    elif not varying:
        diagnostics["rhat_ess"] = "not applicable: every site is the same in every draw"
    else:
        per_site = {
            name: row_diagnostics(
                value.detach().double().cpu().reshape(num_chains, num_draws, -1).numpy()
            )
            for name, value in varying.items()
        }
        worst_rhat = max((d["max_rhat"], name) for name, d in per_site.items())
        least_ess = min((d["min_ess"], name) for name, d in per_site.items())
        diagnostics |= {"max_rhat": worst_rhat[0], "min_ess_bulk": least_ess[0]}
        if warn and worst_rhat[0] > RHAT_THRESHOLD:
            found.append(
                f"{method}: R-hat {worst_rhat[0]:.3g} at site {worst_rhat[1]!r} exceeds "
                f"{RHAT_THRESHOLD}; the chains have not mixed (run longer or more chains)"
            )
        if warn and least_ess[0] < MIN_ESS_PER_CHAIN * num_chains:
            found.append(
                f"{method}: bulk ESS {least_ess[0]:.3g} at site {least_ess[1]!r} is below "
                f"{MIN_ESS_PER_CHAIN} per chain ({MIN_ESS_PER_CHAIN * num_chains})"
            )
    return diagnostics, found


def issue_warnings(messages: list[str], *, category: type[Warning] = SamplingWarning) -> None:
    """Issue each message as a warning pointing at the user's code (the first frame outside
    pyro_bnn, Pyro and torch)."""
    for message in messages:
        warnings.warn(message, category, stacklevel=_user_stacklevel())


def _user_stacklevel() -> int:
    """The ``stacklevel`` of the first caller frame outside this library (2 if none)."""
    import sys

    frame = sys._getframe(1)
    level = 1
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if not module.startswith(("pyro_bnn", "pyro.", "torch", "contextlib")):
            return level
        frame = frame.f_back
        level += 1
    return 2
