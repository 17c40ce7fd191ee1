"""Input and model checks (pyro_bnn.validation): every mistake is refused before inference
with a message that names the argument, the shapes and the likely fix."""

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule, PyroSample
from torch import nn

import pyro_bnn
from pyro_bnn import fit, zoo
from pyro_bnn.layers import Linear
from pyro_bnn.validation import as_inputs, as_targets, check_count, check_inputs_like, check_model

X = torch.linspace(-3, 3, 40)[:, None]
Y = torch.sin(X[:, 0])


class Handwritten(PyroModule):
    """The README's hand-written BNN, optionally without the output's ``.squeeze(-1)``."""

    def __init__(self, *, squeeze: bool = True, in_features: int = 1) -> None:
        super().__init__()
        self.squeeze = squeeze
        self.hidden = Linear(in_features, 5)
        self.out = Linear(5, 1)
        for layer, n_in, n_out in [(self.hidden, in_features, 5), (self.out, 5, 1)]:
            layer.weight = PyroSample(dist.Normal(0.0, 1.0).expand([n_out, n_in]).to_event(2))
            layer.bias = PyroSample(dist.Normal(0.0, 1.0).expand([n_out]).to_event(1))

    def forward(self, x, y=None):
        f = self.out(torch.relu(self.hidden(x)))
        if self.squeeze:
            f = f.squeeze(-1)
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("obs", dist.Normal(f, 0.1), obs=y)


def test_an_output_that_forgot_to_squeeze_is_refused():
    """(N, 1) against the (N,) plate broadcasts to an N×N likelihood: refused, naming both."""
    with pytest.raises(ValueError, match=r"batch shape \(40, 40\).*shape \(40,\).*squeeze\(-1\)"):
        check_model(Handwritten(squeeze=False), X, Y)
    for method in ("map", "nuts"):  # refused before any method runs
        with pytest.raises(ValueError, match=r"batch shape \(40, 40\)"):
            fit(Handwritten(squeeze=False), X, Y, method=method, progress_bar=False)


def test_three_dimensional_x_on_a_handwritten_model_names_x():
    with pytest.raises(ValueError, match=r"batch shape \(40, 40\).*x has shape \(40, 1, 1\)"):
        check_model(Handwritten(), X[:, :, None], Y)


def test_three_dimensional_x_on_a_zoo_model_is_about_x_not_the_targets():
    model = zoo.build("mlp-regression", in_features=1, hidden=(4,))
    with pytest.raises(ValueError, match=r"^x must have shape \(rows, 1\) for this model"):
        fit(model, X[:, :, None], Y, method="map", num_steps=1, progress_bar=False)


def test_a_layer_of_the_wrong_width_is_named():
    with pytest.raises(ValueError, match=r"x has 1 features but the model's first layer 'hidden'"):
        check_model(Handwritten(in_features=3), X, Y)


def test_a_forward_without_y_is_refused():
    class NoY(PyroModule):
        def forward(self, x):
            return x

    with pytest.raises(TypeError, match=r"model\(x, y=None\).*takes \(x\)"):
        fit(NoY(), X, Y, method="map", num_steps=1)
    with pytest.raises(TypeError, match="model must be callable"):
        fit("not a model", X, Y, method="map", num_steps=1)


def test_a_bare_bayesianized_network_is_told_to_add_a_likelihood():
    net = pyro_bnn.bayesianize(nn.Sequential(nn.Linear(1, 3)), pyro_bnn.GaussianPrior())
    with pytest.raises(TypeError, match=r"bare network.*no likelihood.*Gaussian\(\)"):
        fit(net, X, Y, method="map", num_steps=1)


def test_labels_outside_a_handwritten_categorical_get_a_short_message():
    class Classifier(PyroModule):
        def __init__(self):
            super().__init__()
            self.fc = Linear(1, 3)
            self.fc.weight = PyroSample(dist.Normal(0.0, 1.0).expand([3, 1]).to_event(2))

        def forward(self, x, y=None):
            logits = self.fc(x)  # weights are sampled outside the data plate
            with pyro.plate("data", len(x)):
                return pyro.sample("obs", dist.Categorical(logits=logits), obs=y)

    labels = torch.tensor([0, 1, 2, 5] * 10)
    with pytest.raises(ValueError) as caught:
        fit(Classifier(), X, labels, method="map", num_steps=1)
    message = str(caught.value)
    assert message.startswith("y does not fit the model's 'obs' distribution: labels [5, 5")
    assert "outside 0..2" in message and len(message) < 150  # Pyro's was 1.2 kB


def test_values_beyond_float32_are_refused_after_conversion():
    with pytest.raises(ValueError, match="x contains 1 NaN or infinite"):
        as_inputs(np.array([[1e300], [0.0]]))
    with pytest.raises(ValueError, match="y contains 1 NaN or infinite"):
        as_targets(np.array([1e300, 0.0]), rows=2)
    with pytest.raises(ValueError, match="x has no features"):
        as_inputs(torch.zeros(3, 0))


def test_counts_and_input_shapes():
    assert check_count(np.int64(3), name="row_batch") == 3
    for bad, error in [(0, ValueError), (-1, ValueError), (2.5, TypeError), (True, TypeError)]:
        with pytest.raises(error, match="draw_chunk must be a positive integer"):
            check_count(bad, name="draw_chunk")
    with pytest.raises(ValueError, match="x_new has 3 features but the model was fitted on 1"):
        check_inputs_like(torch.zeros(2, 3), X, name="x_new")
    with pytest.raises(ValueError, match=r"x has shape \(2, 1, 1\).*\(rows, 1\)"):
        check_inputs_like(torch.zeros(2, 1, 1), X)
