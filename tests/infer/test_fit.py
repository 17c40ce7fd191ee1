"""fit: bad input is refused before any inference, and hand-written models work."""

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule, PyroSample
from torch import nn

from pyro_bnn import fit, zoo


def _regressor(in_features=2):
    return zoo.build("mlp-regression", in_features=in_features, hidden=(4,))


X = torch.randn(10, 2)
Y = torch.randn(10)


@pytest.mark.parametrize(
    ("x", "y", "error", "match"),
    [
        (
            X.clone().index_put_((torch.tensor(0), torch.tensor(1)), torch.tensor(float("nan"))),
            Y,
            ValueError,
            "x contains 1 NaN or infinite",
        ),
        (
            X,
            torch.cat([Y[:-1], torch.tensor([float("inf")])]),
            ValueError,
            "y contains 1 NaN or infinite",
        ),
        (X, Y[:7], ValueError, "x has 10 rows but y has 7"),
        (X[:, :1], Y, ValueError, "x has 1 features but the model expects 2"),
        (X[:0], Y[:0], ValueError, "x is empty"),
        (X[:, 0], Y, ValueError, r"x must have shape \(rows, features\)"),
        (X, torch.randn(10, 3), ValueError, "y must be 1-D"),
        ("abc", Y, TypeError, "x must be a numpy array or a torch tensor"),
        (np.array([["a", "b"]] * 10), Y, TypeError, "x must hold numbers"),
    ],
)
def test_bad_data_is_refused(x, y, error, match):
    with pytest.raises(error, match=match):
        fit(_regressor(), x, y, method="map", num_steps=1, progress_bar=False)


def test_unknown_method_and_option():
    with pytest.raises(
        ValueError, match="unknown method 'vi'; choose one of map, ensemble, meanfield"
    ):
        fit(_regressor(), X, Y, method="vi")
    with pytest.raises(ValueError, match=r"does not use option.*learning_rate.*its options:.*lr"):
        fit(_regressor(), X, Y, method="meanfield", learning_rate=0.1)
    with pytest.raises(ValueError, match="rank"):
        fit(_regressor(), X, Y, method="meanfield", rank=3)
    with pytest.raises(ValueError, match="num_steps must be positive"):
        fit(_regressor(), X, Y, method="map", num_steps=0)


def test_labels_outside_the_classes():
    model = zoo.build("mlp-classification", in_features=2, num_classes=3, hidden=(4,))
    with pytest.raises(ValueError, match=r"labels \[5\] are outside the model's classes 0..2"):
        fit(model, X, torch.tensor([0, 1, 2, 5, 0, 1, 2, 0, 1, 2]), method="map", num_steps=1)


def test_model_without_obs_site():
    def model(x, y=None):
        w = pyro.sample("w", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            return pyro.sample("target", dist.Normal(w * x[:, 0], 1.0), obs=y)

    with pytest.raises(ValueError, match="no 'obs' sample site"):
        fit(model, X, Y, method="map", num_steps=1)


def test_a_model_whose_layers_do_not_match_x():
    class Handwritten(PyroModule):
        def __init__(self):
            super().__init__()
            self.fc = PyroModule[nn.Linear](3, 1)

        def forward(self, x, y=None):
            with pyro.plate("data", len(x)):
                return pyro.sample("obs", dist.Normal(self.fc(x)[:, 0], 1.0), obs=y)

    with pytest.raises(
        ValueError, match=r"x has 2 features but the model's first layer 'fc' expects 3"
    ):
        fit(Handwritten(), X, Y, method="map", num_steps=1)


class HandwrittenBNN(PyroModule):
    """A BNN in plain Pyro: PyroModule[nn.Linear] (2-D weights only) + PyroSample priors."""

    def __init__(self):
        super().__init__()
        self.fc = PyroModule[nn.Linear](2, 1)
        self.fc.weight = PyroSample(dist.Normal(0.0, 1.0).expand([1, 2]).to_event(2))
        self.fc.bias = PyroSample(dist.Normal(0.0, 1.0).expand([1]).to_event(1))

    def forward(self, x, y=None):
        f = self.fc(x)[:, 0]  # weights are sampled outside the data plate
        with pyro.plate("data", len(x)):
            return pyro.sample("obs", dist.Normal(f, 0.5), obs=y)


@pytest.mark.parametrize("method", ["map", "meanfield", "lowrank", "fullrank", "nuts"])
def test_handwritten_model_with_every_method(method):
    x = np.random.default_rng(0).normal(size=(30, 2))  # numpy float64 input is converted
    y = x @ np.array([1.0, -1.0])
    options = (
        dict(num_samples=20, warmup_steps=20)
        if method == "nuts"
        else dict(num_steps=50) | ({} if method == "map" else dict(num_draws=20))
    )
    post = fit(HandwrittenBNN(), x, y, method=method, progress_bar=False, seed=0, **options)
    assert post.x_train.dtype == torch.float32
    pred = post.predict(x[:5], num_samples=8)  # runs one draw at a time: F.linear is 2-D only
    assert pred.samples.shape == (8, 5) and pred.mean.shape == (5,)
    if method == "nuts":
        assert len(post.mcmc) == 1 and post.guide is None
    else:
        assert post.guide is not None


def test_fits_do_not_share_parameters_by_name():
    """Two fits of same-named guides keep their own parameters (separate param stores)."""
    a = fit(_regressor(), X, Y, method="map", num_steps=20, progress_bar=False, seed=0)
    b = fit(
        _regressor(), X, 5 * Y, method="map", num_steps=200, lr=0.05, progress_bar=False, seed=1
    )
    assert not torch.allclose(a.draws["net.0.weight"], b.draws["net.0.weight"])
    before = a.predict(X, num_samples=1).mean
    b.predict(X, num_samples=1)
    torch.testing.assert_close(a.predict(X, num_samples=1).mean, before)
    assert len(pyro.get_param_store()) == 0  # the caller's store is untouched


def test_learning_rate_schedules():
    """Geometric: lr·(final/lr)^((t + 1)/T), ending at final (ClippedAdam's lrd, applied
    before each step); linear: lr + (final − lr)·t/T, down to 0 allowed (Atanov et al.'s
    schedule); a geometric decay to 0 is refused."""
    from pyro_bnn.infer.svi import SVIOptions, learning_rates

    geometric = learning_rates(SVIOptions(lr=0.1, final_lr=0.001), 4)
    assert geometric.tolist() == pytest.approx([0.1 * 0.01 ** (k / 4) for k in (1, 2, 3, 4)])
    linear = learning_rates(SVIOptions(lr=0.1, final_lr=0.0, lr_decay="linear"), 4)
    assert linear.tolist() == pytest.approx([0.1, 0.075, 0.05, 0.025])
    with pytest.raises(ValueError, match="final_lr=0 needs lr_decay='linear'"):
        SVIOptions(lr=0.1, final_lr=0.0)
    with pytest.raises(ValueError, match="lr_decay must be"):
        SVIOptions(lr_decay="cosine")


@pytest.mark.parametrize("backend", ["pyro", "jit"])
def test_every_step_runs_at_the_schedules_rate(monkeypatch, backend):
    """Pyro's ``SVI.step`` (``backend="pyro"``): the torch optimisers behind Pyro's hold the
    rate once they exist (Pyro makes them on the first step, at the schedule's first rate,
    which for this linear schedule is ``lr``). The compiled step (``"jit"``): each call
    gets the rate."""
    from pyro_bnn.infer import compiled_step, svi

    seen = []
    if backend == "pyro":

        def recording(optimizer, lr):
            set_rate(optimizer, lr)
            groups = [g for o in optimizer.optim_objs.values() for g in o.param_groups]
            seen.append((lr, {g["lr"] for g in groups}))

        set_rate = svi._set_learning_rate
        monkeypatch.setattr(svi, "_set_learning_rate", recording)
    else:

        def recording(self, x, y, *, lr):
            seen.append((lr, {lr}))
            return step(self, x, y, lr=lr)

        step = compiled_step.CompiledStep.__call__
        monkeypatch.setattr(compiled_step.CompiledStep, "__call__", recording)
    model = zoo.build("mlp-regression", in_features=2, hidden=(4,))
    x, y = torch.randn(20, 2), torch.randn(20)
    fit(model, x, y, method="map", num_steps=10, lr=0.01, final_lr=0.0, lr_decay="linear",
        backend=backend, progress_bar=False, seed=0)  # fmt: skip
    assert [lr for lr, _ in seen] == pytest.approx([0.01 * (1 - t / 10) for t in range(10)])
    first = set() if backend == "pyro" else {0.01}
    assert seen[0][1] == first and all(rates == {lr} for lr, rates in seen[1:])
