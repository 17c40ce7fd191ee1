"""Convergence checks shared by every method: R-hat and ESS over draws laid out as
(chain, draw, ...), with the warnings they raise.

Example:
    >>> import numpy as np
    >>> sorted(row_diagnostics(np.random.default_rng(0).normal(size=(2, 200, 3))))
    ['max_rhat', 'min_ess']
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

__all__ = [
    "MIN_ESS_PER_CHAIN",
    "RHAT_THRESHOLD",
    "ConvergenceWarning",
    "SamplingWarning",
    "issue_warnings",
    "loss_diagnostics",
    "mixing_diagnostics",
    "row_diagnostics",
]

# Vehtari et al. 2021: R-hat below 1.01 and a bulk ESS of at least 100 per chain
RHAT_THRESHOLD = 1.01
MIN_ESS_PER_CHAIN = 100


class SamplingWarning(UserWarning):
    """A sampler's diagnostics suggest its draws do not represent the posterior."""


class ConvergenceWarning(UserWarning):
    """An optimisation (SVI, MAP, an ensemble member) ran away or stopped before converging."""


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


def row_diagnostics(values: np.ndarray) -> dict[str, float]:
    """``min_ess`` and ``max_rhat`` over the last axis of draws shaped (chain, draw, rows).

    ArviZ's R-hat needs two chains; a single chain is compared across its two halves
    (which R-hat's own splitting then halves again).
    """
    import arviz as az

    values = np.asarray(values)
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
    if num_draws < 4:
        diagnostics["rhat_ess"] = (
            f"not applicable: {num_draws} draw(s) per chain (R-hat and ESS need several)"
        )
    else:
        per_site = {
            name: row_diagnostics(
                value.detach().double().cpu().reshape(num_chains, num_draws, -1).numpy()
            )
            for name, value in draws.items()
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
