"""scikit-learn estimators over the zoo's Bayesian MLPs: :class:`BNNRegressor` and
:class:`BNNClassifier`.

Each ``fit`` builds a fresh zoo model (``mlp-regression`` or ``mlp-classification``) from
the estimator's parameters and runs :func:`pyro_bnn.fit` on it; the
:class:`~pyro_bnn.posterior.Posterior` is kept as ``posterior_``. Inputs go in as they are
(put a ``StandardScaler`` in front in a ``Pipeline``); regression targets are standardised
inside (``normalize_y``) so that the N(0, σ²) prior and the noise prior fit them, and
predictions are mapped back. A fitted estimator pickles through :mod:`pyro_bnn.io`
(safetensors + JSON), never by pickling the Pyro model.

Example:
    >>> import numpy as np
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> X = np.linspace(-2, 2, 40)[:, None]
    >>> y = np.sin(2 * X[:, 0])
    >>> pipe = make_pipeline(StandardScaler(), BNNRegressor(
    ...     hidden=(16,), method_options={"num_steps": 300, "num_draws": 50}, random_state=0))
    >>> pipe.fit(X, y).predict(X[:3]).shape
    (3,)
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pyro
import pyro.util
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from pyro_bnn.infer import fit as fit_posterior
from pyro_bnn.posterior import Posterior, Prediction
from pyro_bnn.priors import GaussianPrior, PriorHook
from pyro_bnn.validation import check_count
from pyro_bnn.zoo import build

__all__ = ["BNNClassifier", "BNNRegressor"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "silu": nn.SiLU,
    "sigmoid": nn.Sigmoid,
}
_MAX_SEED = 2**31 - 1


@contextlib.contextmanager
def _own_rng() -> Iterator[None]:
    """Leave the caller's torch, numpy and ``random`` generators as they were: fitting and
    predicting seed them (``pyro.set_rng_seed``) from the estimator's own seed."""
    state = pyro.util.get_rng_state()
    try:
        yield
    finally:
        pyro.util.set_rng_state(state)


def _seed_from(random_state: int | np.random.RandomState | None) -> int:
    """An integer seed: ``random_state`` itself if it is an int, else drawn from it
    (None: from numpy's global generator)."""
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if not 0 <= random_state <= 2**32 - 1:
            raise ValueError(f"random_state must be in [0, 2**32 - 1], got {random_state}")
        return int(random_state)
    return int(check_random_state(random_state).randint(_MAX_SEED))


class _BNNBase(BaseEstimator):
    """What both estimators share: the prior, the fit, prediction and pickling."""

    _zoo_name: str

    def _activation(self) -> type[nn.Module]:
        if isinstance(self.activation, str):
            if self.activation not in ACTIVATIONS:
                raise ValueError(
                    f"activation must be one of {sorted(ACTIVATIONS)} or an nn.Module "
                    f"class, got {self.activation!r}"
                )
            return ACTIVATIONS[self.activation]
        if isinstance(self.activation, type) and issubclass(self.activation, nn.Module):
            return self.activation
        raise TypeError(f"activation must be a name or an nn.Module class, got {self.activation!r}")

    def _prior(self) -> PriorHook:
        if self.prior is not None:
            return self.prior
        scale = self.prior_scale
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
            raise TypeError(f"prior_scale must be a positive number, got {scale!r}")
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"prior_scale must be positive and finite, got {scale!r}")
        return GaussianPrior(scale=float(scale))

    def _model_kwargs(self) -> dict[str, Any]:
        raise NotImplementedError

    def _build_model(self) -> Any:
        return build(
            self._zoo_name,
            in_features=self.n_features_in_,
            hidden=(self.hidden,)
            if isinstance(self.hidden, numbers.Integral)
            else tuple(self.hidden),
            prior=self._prior(),
            activation=self._activation(),
            **self._model_kwargs(),
        )

    def _fit_posterior(self, X: np.ndarray, y: torch.Tensor) -> None:
        if not isinstance(self.method_options or {}, Mapping):
            raise TypeError(f"method_options must be a dict, got {self.method_options!r}")
        options = dict(self.method_options or {})
        self.seed_ = _seed_from(self.random_state)
        with _own_rng():
            pyro.set_rng_seed(self.seed_)  # the network's initial weights too
            model = self._build_model()
            self.posterior_: Posterior = fit_posterior(
                model, torch.tensor(X), y, method=self.method, seed=self.seed_,
                progress_bar=self.progress_bar, **options,
            )  # fmt: skip

    def _predict(self, X, *, num_samples: int | None = None, seed: int | None = None):
        """The posterior's prediction at ``X``: summaries from at most ``num_samples`` of
        its stored draws (more would repeat them and change nothing), or, for predictive
        draws, ``num_samples`` draws seeded by ``seed``."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float32, reset=False)
        if num_samples is None:
            total = self.posterior_.num_chains * self.posterior_.num_draws
            wanted = None if self.num_samples is None else check_count(
                self.num_samples, name="num_samples")  # fmt: skip
            num_samples = total if wanted is None else min(wanted, total)
        with _own_rng():
            return self.posterior_.predict(
                torch.tensor(X), num_samples=num_samples, seed=self.seed_ if seed is None else seed
            )

    def _sample(self, X, n_samples: int, random_state) -> Prediction:
        if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral):
            raise TypeError(f"n_samples must be a positive integer, got {n_samples!r}")
        if n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples}")
        return self._predict(X, num_samples=int(n_samples), seed=_seed_from(random_state))

    # Pickling: the posterior holds a Pyro model and guides; it travels as pyro_bnn.io's
    # bytes (safetensors + JSON) and is rebuilt on a fresh model of the same parameters.
    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())  # a copy: object's is the live __dict__
        posterior = state.pop("posterior_", None)
        if posterior is not None:
            from pyro_bnn.io import to_bytes

            state["_posterior_bytes"] = to_bytes(posterior)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        data = state.pop("_posterior_bytes", None)
        super().__setstate__(state)
        if data is not None:
            from pyro_bnn.io import from_bytes

            with _own_rng():  # building draws initial weights, which the file replaces
                self.posterior_ = from_bytes(data, model=self._build_model())


class BNNRegressor(RegressorMixin, _BNNBase):
    """A Bayesian MLP regressor (the zoo's ``mlp-regression``) with sklearn's interface.

    ``method`` is any of :data:`pyro_bnn.METHODS`, with its options in ``method_options``
    (default: the method's own, 20,000 full-batch steps for SVI methods, ~15 s for 200
    rows on one core; ``{"num_steps": 500}`` fits fast but leaves mean-field's noise
    overestimated). The default ``"meanfield"`` is Bayesian (the predictive std holds the
    weights' uncertainty) and fits the mean in a few hundred steps on small data. Every
    weight has the prior N(0, ``prior_scale``²), or the hook ``prior`` where given.
    ``noise_scale`` fixes the noise σ (on the standardised scale when ``normalize_y``),
    else it is learned.
    Predictions average over at most ``num_samples`` posterior draws (None: all; a MAP
    has one); ``random_state`` fixes the fit and predictions (the global RNGs are left as
    they were).

    Fitted: ``posterior_``, ``n_features_in_``, ``y_mean_``/``y_scale_`` (the target
    scaling, 0 and 1 without ``normalize_y``), ``seed_`` (the seed fit used).

    Example:
        >>> import numpy as np
        >>> X = np.linspace(-2, 2, 40)[:, None]
        >>> y = np.sin(2 * X[:, 0])
        >>> reg = BNNRegressor(hidden=(16,), method_options={"num_steps": 300, "num_draws": 50},
        ...                    random_state=0).fit(X, y)
        >>> mean, std = reg.predict(X[:3], return_std=True)
        >>> mean.shape, bool((std > 0).all()), reg.sample_y(X[:3], n_samples=5).shape
        ((3,), True, (3, 5))
    """

    _zoo_name = "mlp-regression"

    def __init__(
        self,
        *,
        method: str = "meanfield",
        hidden: tuple[int, ...] = (50,),
        prior_scale: float = 1.0,
        prior: PriorHook | None = None,
        activation: str | type[nn.Module] = "relu",
        noise_scale: float | None = None,
        learn_noise_prior: bool = False,
        normalize_y: bool = True,
        method_options: dict[str, Any] | None = None,
        num_samples: int | None = 100,
        random_state: int | np.random.RandomState | None = None,
        progress_bar: bool = False,
    ) -> None:
        self.method = method
        self.hidden = hidden
        self.prior_scale = prior_scale
        self.prior = prior
        self.activation = activation
        self.noise_scale = noise_scale
        self.learn_noise_prior = learn_noise_prior
        self.normalize_y = normalize_y
        self.method_options = method_options
        self.num_samples = num_samples
        self.random_state = random_state
        self.progress_bar = progress_bar

    def _model_kwargs(self) -> dict[str, Any]:
        return {"noise_scale": self.noise_scale, "learn_noise_prior": self.learn_noise_prior}

    def fit(self, X, y) -> BNNRegressor:
        """Fit the posterior to ``X`` (n, features) and ``y`` (n,); returns self."""
        X, y = validate_data(self, X, y, dtype=np.float32, y_numeric=True)
        y = np.asarray(y, dtype=np.float64)
        if self.normalize_y:
            self.y_mean_ = float(y.mean())
            scale = float(y.std())
            # a constant target (up to rounding) keeps scale 1
            tiny = 10 * np.finfo(np.float32).eps * max(1.0, abs(self.y_mean_))
            self.y_scale_ = scale if scale > tiny else 1.0
        else:
            self.y_mean_, self.y_scale_ = 0.0, 1.0
        targets = torch.from_numpy(((y - self.y_mean_) / self.y_scale_).astype(np.float32))
        self._fit_posterior(X, targets)
        return self

    def predict(self, X, return_std: bool = False):
        """The predictive mean at ``X`` (n,); with ``return_std``, also its standard
        deviation (weights' uncertainty and noise)."""
        prediction = self._predict(X)
        mean = prediction.mean.double().numpy() * self.y_scale_ + self.y_mean_
        if not return_std:
            return mean
        return mean, prediction.std.double().numpy() * self.y_scale_

    def sample_y(self, X, n_samples: int = 1, random_state=0) -> np.ndarray:
        """Draws of the predictive at ``X``, shaped (n, n_samples) like
        ``GaussianProcessRegressor.sample_y``; ``random_state`` fixes them."""
        samples = self._sample(X, n_samples, random_state).samples
        return samples.double().numpy().T * self.y_scale_ + self.y_mean_


class BNNClassifier(ClassifierMixin, _BNNBase):
    """A Bayesian MLP classifier (the zoo's ``mlp-classification``, categorical over the
    classes seen in ``fit``) with sklearn's interface.

    Labels may be of any type (strings too): they are mapped to class indices with a
    ``LabelEncoder``. ``predict_proba`` averages the class probabilities over
    ``num_samples`` posterior draws; ``predict`` takes their most probable class. The
    other parameters are :class:`BNNRegressor`'s.

    Fitted: ``posterior_``, ``classes_``, ``n_features_in_``, ``seed_``.

    Example:
        >>> import numpy as np
        >>> X = np.r_[np.random.default_rng(0).normal(size=(20, 2)) - 2,
        ...           np.random.default_rng(1).normal(size=(20, 2)) + 2]
        >>> y = np.array(["a"] * 20 + ["b"] * 20)
        >>> clf = BNNClassifier(hidden=(8,), method_options={"num_steps": 200, "num_draws": 50},
        ...                     random_state=0).fit(X, y)
        >>> clf.predict([[-2.0, -2.0], [2.0, 2.0]]).tolist(), clf.predict_proba(X).shape
        (['a', 'b'], (40, 2))
    """

    _zoo_name = "mlp-classification"

    def __init__(
        self,
        *,
        method: str = "meanfield",
        hidden: tuple[int, ...] = (50,),
        prior_scale: float = 1.0,
        prior: PriorHook | None = None,
        activation: str | type[nn.Module] = "relu",
        method_options: dict[str, Any] | None = None,
        num_samples: int | None = 100,
        random_state: int | np.random.RandomState | None = None,
        progress_bar: bool = False,
    ) -> None:
        self.method = method
        self.hidden = hidden
        self.prior_scale = prior_scale
        self.prior = prior
        self.activation = activation
        self.method_options = method_options
        self.num_samples = num_samples
        self.random_state = random_state
        self.progress_bar = progress_bar

    def _model_kwargs(self) -> dict[str, Any]:
        return {"num_classes": len(self.classes_)}

    def fit(self, X, y) -> BNNClassifier:
        """Fit the posterior to ``X`` (n, features) and labels ``y`` (n,); returns self."""
        X, y = validate_data(self, X, y, dtype=np.float32)
        check_classification_targets(y)
        encoder = LabelEncoder().fit(y)
        if len(encoder.classes_) < 2:
            raise ValueError(
                f"BNNClassifier needs samples of at least 2 classes; y holds only one class "
                f"({encoder.classes_[0]!r})"
            )
        self.classes_ = encoder.classes_
        self._fit_posterior(X, torch.from_numpy(encoder.transform(y).astype(np.int64)))
        return self

    def predict_proba(self, X) -> np.ndarray:
        """Posterior-averaged class probabilities (n, classes), columns in ``classes_`` order."""
        probs = self._predict(X).probs.double().numpy()
        return probs / probs.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X) -> np.ndarray:
        return np.log(self.predict_proba(X))

    def predict(self, X) -> np.ndarray:
        """The most probable class of each row of ``X``, as one of ``classes_``."""
        probs = self.predict_proba(X)  # first: it raises NotFittedError before classes_ is read
        return self.classes_[probs.argmax(axis=1)]

    def sample_y(self, X, n_samples: int = 1, random_state=0) -> np.ndarray:
        """Labels drawn from the predictive at ``X``, shaped (n, n_samples), values from
        ``classes_``; ``random_state`` fixes them."""
        samples = self._sample(X, n_samples, random_state).samples
        return self.classes_[samples.long().numpy().T]
