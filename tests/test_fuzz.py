"""Property-based fuzzing of the public entry points: ``fit``, ``Posterior.predict``,
``Posterior.log_likelihood`` and ``to_inference_data``.

Hypothesis generates inputs: arrays of every dtype and shape (empty, 1-D, 3-D, too many or
too few features, rows that do not match), values (NaN, ±inf, beyond float32, huge but
finite), things that are not arrays at all, options of the wrong type or range, unknown
options, and models that break the contract (an output that forgot ``.squeeze(-1)``, a
forward without ``y``, a network of the wrong width). Each generated argument is either
valid or *suspect*, and the test knows which.

The contract checked for every example:
- all arguments valid: the call succeeds, with outputs of the documented shapes;
- some suspect: the call succeeds with those shapes, or raises ``ValueError``/``TypeError``
  whose message names one of the suspect arguments (a whole word: ``x``, ``lr``, ``model``);
  a fit whose loss reaches NaN/inf after steps raises ``FloatingPointError`` naming the
  step-size option (``lr``) and the data's scale, allowed when ``lr`` is huge or x or y
  holds huge values;
- anything else (another exception, a wrong shape, a message about something else) fails,
  and so does an example slower than its ``deadline`` or a hang (a 60 s alarm).

Default run: 120 fit + 30 misshapen-model fits + 150 predict + 100 log_likelihood + 40
to_inference_data = 440 examples, derandomised so CI is repeatable. ``pytest -m slow``
runs ten times as many, randomised (4,180: the misshapen-model cases run out at 80).
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
import signal
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pyro.nn import PyroModule

from pyro_bnn import fit, to_inference_data, zoo

FEATURES = 2
HANG_S = 60  # an example still running after this long is a hang


def _settings(examples: int, deadline_ms: int, *, slow: bool = False):
    return settings(
        max_examples=examples * (10 if slow else 1),
        deadline=deadline_ms,
        derandomize=not slow,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                               HealthCheck.data_too_large],
        print_blob=True,
    )  # fmt: skip


# -- generated arguments: (value, suspect?) --------------------------------------------------


@st.composite
def faults(draw, names: list[str]) -> set[str]:
    """Which arguments of one call are made invalid: none in half the examples (so most
    calls really run), one or two otherwise."""
    count = draw(st.sampled_from([0, 0, 0, 1, 1, 2]))
    return set(draw(st.permutations(names))[:count])


@st.composite
def arrays(draw, *, rows: int, tail: tuple[int, ...], bad: bool) -> tuple[Any, bool]:
    """An input (tail=(features,)) or target (tail=()) array of ``rows`` rows: valid, or
    (``bad``) one of the ways an array goes wrong."""
    kind = "valid"
    if bad:
        kind = draw(
            st.sampled_from(["nan", "inf", "huge", "beyond32", "empty", "shape", "type", "dtype"])
        )
    shape = (rows, *tail)
    if kind == "type":
        return draw(st.sampled_from(["abc", None, 3.0, {"a": 1}, [[1, "a"]]])), True
    if kind == "dtype":
        value = draw(st.sampled_from([np.full(shape, "a"), np.zeros(shape, np.complex64)]))
        return value, True
    if kind == "empty":
        return np.zeros((0, *tail), np.float32), True
    if kind == "shape":
        options = [(rows,), (rows, *tail, 1), (rows, 3, 2)]
        if tail:
            options += [(rows, tail[0] + 1), (rows, 0)]
        else:
            options += [(rows, 2)]
        shape = draw(st.sampled_from([s for s in options if s != (rows, *tail)]))
        return np.random.default_rng(0).normal(size=shape).astype(np.float32), True
    dtype = draw(
        st.sampled_from([np.float32, np.float64, np.float16, np.int64, np.int32, np.bool_])
    )
    if kind != "valid":
        dtype = np.float64 if kind == "beyond32" else np.float32
    if np.issubdtype(dtype, np.floating):
        elements = st.floats(-5, 5, width=np.finfo(dtype).bits)
    elif dtype == np.bool_:
        elements = st.booleans()
    else:
        elements = st.integers(-5, 5)
    value = draw(hnp.arrays(dtype, shape, elements=elements))
    if kind != "valid":
        flat = value.reshape(-1)
        at = draw(st.integers(0, flat.size - 1))
        flat[at] = {"nan": np.nan, "inf": -np.inf, "huge": 3e37, "beyond32": 1e300}[kind]
    if draw(st.booleans()):
        value = torch.from_numpy(value.copy())
    return value, kind != "valid"


def _option(
    draw, valid: st.SearchStrategy, bad: list, *, is_bad: bool, huge: list | None = None
) -> tuple[Any, bool]:
    """(value, suspect?): valid, or (``is_bad``) a wrong type or range, or huge."""
    if not is_bad:
        return draw(valid), False
    return draw(st.sampled_from(bad + (huge or []))), True


BAD_COUNTS = [0, -3, 2.5, "10", math.inf, math.nan, True, [5]]


FIT_OPTIONS = ["num_steps", "lr", "backend", "batch_size", "num_chains", "seed", "num_draws",
               "learning_rate"]  # fmt: skip


@st.composite
def fit_options(draw, method: str, broken: set[str]) -> tuple[dict, set[str]]:
    """Keyword options of ``fit`` (those in ``broken`` invalid) and the suspect names."""
    options, suspects = {}, set()
    generated = {
        "num_steps": _option(draw, st.integers(1, 12), BAD_COUNTS,
                             is_bad="num_steps" in broken),
        "lr": _option(draw, st.floats(1e-4, 0.1), [0.0, -0.1, math.inf, "0.01", True],
                      is_bad="lr" in broken, huge=[1e8, 1e30]),
        "backend": _option(draw, st.sampled_from(["pyro", "jit"]), ["gpu", 3, None],
                           is_bad="backend" in broken),
        "batch_size": _option(draw, st.sampled_from([None, 1, 2, 5]), [0, 2.5, "2"],
                              is_bad="batch_size" in broken),
        "num_chains": _option(draw, st.sampled_from([1, 1, 2]), [0, -1, 1.5, "2"],
                              is_bad="num_chains" in broken),
        "seed": _option(draw, st.one_of(st.none(), st.integers(0, 99)), [-1, "abc", 1.5],
                        is_bad="seed" in broken),
    }  # fmt: skip
    if method == "meanfield" or "num_draws" in broken:  # map has no num_draws: suspect there
        generated["num_draws"] = _option(
            draw,
            st.integers(1, 4),
            BAD_COUNTS,
            is_bad=method != "meanfield" or "num_draws" in broken,
        )
    if "learning_rate" in broken:
        generated["learning_rate"] = (0.1, True)  # an option no method has
    for name, (value, suspect) in generated.items():
        options[name] = value
        if suspect:
            suspects.add(name)
    options["chain_processes"] = 1  # worker processes are tested in tests/infer
    return options, suspects


# -- models ------------------------------------------------------------------------------------


class Unsqueezed(PyroModule):
    """A regression model whose output keeps its trailing 1: (N, 1) against the (N,) plate."""

    def __init__(self) -> None:
        super().__init__()
        self.net = zoo.build("mlp-regression", in_features=FEATURES, hidden=(3,)).net

    def forward(self, x, y=None):
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("obs", dist.Normal(self.net(x), 1.0), obs=y)


class Misshapen(PyroModule):
    """A regression model whose output reaches ``obs`` in a wrong shape: ``(N, 1)``
    (unsqueezed), ``(N, 2)`` (two outputs), ``(1, N)`` (transposed)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        outputs = 2 if kind == "two outputs" else 1
        self.net = zoo.build("mlp-heteroscedastic", in_features=FEATURES, hidden=(3,)).net
        if outputs == 1:
            self.net = zoo.build("mlp-regression", in_features=FEATURES, hidden=(3,)).net

    def forward(self, x, y=None):
        f = self.net(x)
        if self.kind == "transposed":
            f = f.transpose(-1, -2)
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("obs", dist.Normal(f, 1.0), obs=y)


class NoTargets(PyroModule):
    def forward(self, x):
        return x


@st.composite
def models(draw, *, bad: bool) -> tuple[Any, bool, set[str]]:
    """(model, is it a classifier?, suspects)."""
    good, broken = ["regression", "regression", "classifier"], ["wide", "unsqueezed", "no-y"]
    kind = draw(st.sampled_from(broken if bad else good))
    if kind == "regression":
        return zoo.build("mlp-regression", in_features=FEATURES, hidden=(3,)), False, set()
    if kind == "classifier":
        model = zoo.build("mlp-classification", in_features=FEATURES, num_classes=3, hidden=(3,))
        return model, True, set()
    if kind == "wide":
        return zoo.build("mlp-regression", in_features=FEATURES + 1, hidden=(3,)), False, {
            "model", "x"}  # fmt: skip
    if kind == "unsqueezed":
        return Unsqueezed(), False, {"model"}
    return NoTargets(), False, {"model"}


@st.composite
def labels(draw, rows: int, *, bad: bool) -> tuple[Any, bool]:
    kind = draw(st.sampled_from(["range", "fraction", "other"])) if bad else "valid"
    if kind == "other":  # a broken array
        return draw(arrays(rows=rows, tail=(), bad=True))[0], True
    if kind == "valid":
        value = draw(hnp.arrays(np.int64, (rows,), elements=st.integers(0, 2)))
        return (torch.from_numpy(value) if draw(st.booleans()) else value), False
    value = np.zeros(rows, np.float32)
    value[0] = 7 if kind == "range" else 0.5
    return value, True


# -- the contract -------------------------------------------------------------------------------


@contextlib.contextmanager
def no_hang(seconds: int = HANG_S) -> Iterator[None]:
    """Fail an example that runs past ``seconds`` (hypothesis' deadline only judges an
    example after it returns)."""

    def alarm(signum, frame):
        raise TimeoutError(f"an example ran past {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def contract(suspects: set[str], *, divergence_names: set[str] = frozenset()) -> Iterator[None]:
    """Either no error, or a ValueError/TypeError naming a suspect argument; a
    FloatingPointError only when it names a suspect in ``divergence_names``."""
    with no_hang(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        except (ValueError, TypeError) as error:
            named = [s for s in suspects if re.search(rf"\b{re.escape(s)}\b", str(error))]
            assert suspects, f"valid arguments raised {type(error).__name__}: {error}"
            assert named, f"{type(error).__name__} names none of {sorted(suspects)}: {error}"
            raise _Refused from None
        except FloatingPointError as error:
            allowed = suspects & divergence_names
            assert allowed, f"FloatingPointError with no suspect step size: {error}"
            assert any(re.search(rf"\b{s}\b", str(error)) for s in allowed), str(error)
            raise _Refused from None


class _Refused(Exception):
    """A call refused its suspect arguments as the contract says."""


def _outcome(call) -> Any:
    """The call's result, or None when it was refused as it should be (each outcome is a
    hypothesis event: ``--hypothesis-show-statistics`` counts them)."""
    try:
        result = call()
    except _Refused:
        event("refused")
        return None
    event("ran")
    return result


def _check_prediction(pred, *, rows: int, samples: int, classes: int | None) -> None:
    assert pred.mean.shape == (rows,) and pred.std.shape == (rows,)
    assert pred.samples.shape == (samples, rows)
    if classes is not None:
        assert pred.probs.shape == (rows, classes)


# -- fit ----------------------------------------------------------------------------------------


def _fit_property(data) -> None:
    broken = data.draw(faults(["x", "y", "rows", "model", "method", *FIT_OPTIONS]), label="faults")
    rows = data.draw(st.integers(1, 6), label="rows")
    model, classifier, suspects = data.draw(models(bad="model" in broken), label="model")
    x, x_bad = data.draw(arrays(rows=rows, tail=(FEATURES,), bad="x" in broken), label="x")
    y, y_bad = data.draw(
        labels(rows, bad="y" in broken)
        if classifier
        else arrays(rows=rows, tail=(), bad="y" in broken),
        label="y",
    )
    if "rows" in broken:
        y = y[:-1] if hasattr(y, "shape") and len(y) > 1 else "not the rows of x"
        y_bad = True
    method = data.draw(
        st.sampled_from(["vi", 3, None] if "method" in broken else ["map", "meanfield"]),
        label="method",
    )
    options, option_suspects = data.draw(fit_options(method, broken), label="options")
    suspects = (
        suspects
        | option_suspects
        | {n for n, bad in [("x", x_bad), ("y", y_bad), ("method", "method" in broken)] if bad}
    )
    if x_bad or y_bad:
        suspects |= {"x", "y"}  # a value one side makes the other's scale matter too
    with pyro.get_param_store().scope():
        post = _outcome(lambda: _fit(model, x, y, method, options, suspects))
    if post is None:
        return
    chains, draws = options["num_chains"], options.get("num_draws", 1)
    for value in post.draws.values():
        assert value.shape[:2] == (chains, draws)
    pred = post.predict(post.x_train, num_samples=3)
    _check_prediction(pred, rows=rows, samples=3, classes=3 if classifier else None)
    assert post.log_likelihood(post.x_train, post.y_train).shape == (chains, draws, rows)


def _fit(model, x, y, method, options, suspects):
    with contract(suspects, divergence_names={"lr", "x", "y"}):
        return fit(model, x, y, method=method, progress_bar=False, **options)


@_settings(120, 20_000)
@given(data=st.data())
def test_fit(data):
    _fit_property(data)


@pytest.mark.slow
@_settings(120, 20_000, slow=True)
@given(data=st.data())
def test_fit_slow(data):
    _fit_property(data)


def _misshapen_property(data) -> None:
    """A model whose output is not one value per row is refused by fit, naming the model
    (or x, when x is 3-D), whatever the method; never fitted with an N×N likelihood."""
    rows = data.draw(st.integers(2, 6), label="rows")
    kind = data.draw(st.sampled_from(["unsqueezed", "two outputs", "transposed", "3-D x"]))
    model = Misshapen("unsqueezed" if kind == "3-D x" else kind)
    x = torch.randn(rows, FEATURES)
    if kind == "3-D x":
        x = x[:, :, None].expand(rows, FEATURES, 2).transpose(1, 2)  # (rows, 2, FEATURES)
    method = data.draw(st.sampled_from(["map", "meanfield", "nuts", "sgld"]), label="method")
    with pytest.raises(ValueError, match=r"\bmodel\b|\bx\b"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit(model, x, torch.randn(rows), method=method, progress_bar=False)


@_settings(30, 5_000)
@given(data=st.data())
def test_misshapen_models(data):
    _misshapen_property(data)


@pytest.mark.slow
@_settings(30, 5_000, slow=True)
@given(data=st.data())
def test_misshapen_models_slow(data):
    _misshapen_property(data)


# -- predict, log_likelihood, to_inference_data on one fitted posterior --------------------------


@functools.cache
def fitted():
    """One small MAP fit, shared by the predict-side properties (3 ensemble members, so
    chains × draws = 3 × 1, and replay runs per chain)."""
    x = torch.linspace(-1, 1, 8)[:, None].repeat(1, FEATURES)
    y = x.sum(-1)
    model = zoo.build("mlp-regression", in_features=FEATURES, hidden=(3,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit(model, x, y, method="ensemble", num_members=3, num_steps=30,
                   chain_processes=1, progress_bar=False, seed=0)  # fmt: skip


def _counts(data, names: tuple[str, ...], broken: set[str]) -> tuple[dict, set[str]]:
    """Counts: num_samples (None keeps every draw), row_batch and draw_chunk (a count far
    beyond the rows or draws is valid: it only batches differently)."""
    chosen, suspects = {}, set()
    for name in names:
        if name == "num_samples":
            value, bad = _option(data.draw, st.one_of(st.none(), st.integers(1, 7)), BAD_COUNTS,
                                 is_bad=name in broken)  # fmt: skip
        else:
            value, bad = _option(data.draw, st.integers(1, 7), BAD_COUNTS, huge=[10**9],
                                 is_bad=name in broken)  # fmt: skip
            bad = bad and value != 10**9
        if bad or data.draw(st.booleans(), label=f"{name} given"):
            chosen[name] = value
            if bad:
                suspects.add(name)
    return chosen, suspects


def _predict_property(data) -> None:
    post = fitted()
    rows = data.draw(st.integers(1, 6), label="rows")
    broken = data.draw(faults(["x", "num_samples", "row_batch", "draw_chunk", "seed"]))
    x, x_bad = data.draw(arrays(rows=rows, tail=(FEATURES,), bad="x" in broken), label="x")
    kwargs, suspects = _counts(data, ("num_samples", "row_batch", "draw_chunk"), broken)
    seed, seed_bad = _option(data.draw, st.one_of(st.none(), st.integers(0, 9)), [-1, "a", 1.5],
                             is_bad="seed" in broken)  # fmt: skip
    suspects |= {n for n, bad in [("x", x_bad), ("seed", seed_bad)] if bad}

    def call():
        with contract(suspects):
            return post.predict(x, seed=seed, **kwargs)

    pred = _outcome(call)
    if pred is not None:
        samples = kwargs.get("num_samples", 1000) or 3  # None: the 3 draws
        _check_prediction(pred, rows=rows, samples=samples, classes=None)


# a row_batch and draw_chunk of 1 replay 1,000 draws one row at a time: seconds, not a hang
@_settings(150, 20_000)
@given(data=st.data())
def test_predict(data):
    _predict_property(data)


@pytest.mark.slow
@_settings(150, 20_000, slow=True)
@given(data=st.data())
def test_predict_slow(data):
    _predict_property(data)


def _log_likelihood_property(data) -> None:
    post = fitted()
    rows = data.draw(st.integers(1, 6), label="rows")
    broken = data.draw(faults(["x", "y", "row_batch", "draw_chunk"]))
    x, x_bad = data.draw(arrays(rows=rows, tail=(FEATURES,), bad="x" in broken), label="x")
    y, y_bad = data.draw(arrays(rows=rows, tail=(), bad="y" in broken), label="y")
    kwargs, suspects = _counts(data, ("row_batch", "draw_chunk"), broken)
    suspects |= {n for n, bad in [("x", x_bad), ("y", y_bad)] if bad}

    def call():
        with contract(suspects):
            return post.log_likelihood(x, y, **kwargs)

    log_lik = _outcome(call)
    if log_lik is not None:
        assert log_lik.shape == (3, 1, rows)


@_settings(100, 5_000)
@given(data=st.data())
def test_log_likelihood(data):
    _log_likelihood_property(data)


@pytest.mark.slow
@_settings(100, 5_000, slow=True)
@given(data=st.data())
def test_log_likelihood_slow(data):
    _log_likelihood_property(data)


def _inference_data_property(data) -> None:
    post = fitted()
    suspects: set[str] = set()
    kwargs: dict[str, Any] = {}
    broken = data.draw(faults(["x", "y", "x_new", "seed"]))
    rows = data.draw(st.integers(1, 5), label="rows")
    if {"x", "y"} & broken or data.draw(st.booleans(), label="own data"):
        kwargs["x"], x_bad = data.draw(arrays(rows=rows, tail=(FEATURES,), bad="x" in broken))
        kwargs["y"], y_bad = data.draw(arrays(rows=rows, tail=(), bad="y" in broken))
        suspects |= {n for n, bad in [("x", x_bad), ("y", y_bad)] if bad}
    new_rows = data.draw(st.integers(1, 5), label="new rows")
    if "x_new" in broken or data.draw(st.booleans(), label="x_new"):
        kwargs["x_new"], bad = data.draw(
            arrays(rows=new_rows, tail=(FEATURES,), bad="x_new" in broken)
        )
        if bad:
            suspects.add("x_new")
    seed, seed_bad = _option(data.draw, st.one_of(st.none(), st.integers(0, 9)), [-1, "a", 1.5],
                             is_bad="seed" in broken)  # fmt: skip
    if seed_bad:
        suspects.add("seed")

    def call():
        with contract(suspects):
            return to_inference_data(post, seed=seed, **kwargs)

    idata = _outcome(call)
    if idata is None:
        return
    # None is each argument's default (the training data, no predictions)
    observed = rows if kwargs.get("x") is not None else len(post.x_train)
    assert idata.log_likelihood["obs"].shape == (3, 1, observed)
    assert idata.posterior_predictive["obs"].shape == (3, 1, observed)
    assert idata.observed_data["obs"].shape == (observed,)
    if kwargs.get("x_new") is not None:
        assert idata.predictions["obs"].shape == (3, 1, new_rows)


@_settings(40, 10_000)
@given(data=st.data())
def test_to_inference_data(data):
    _inference_data_property(data)


@pytest.mark.slow
@_settings(40, 10_000, slow=True)
@given(data=st.data())
def test_to_inference_data_slow(data):
    _inference_data_property(data)
