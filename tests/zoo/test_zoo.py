"""Every zoo model: sites and shapes, a few SVI steps with a finite loss, predict shapes;
the zoo's table, its cards, and model modules that never import the table."""

import ast
from pathlib import Path

import pytest
import torch
from pyro import poutine

from pyro_bnn import fit, zoo
from pyro_bnn.cli import main
from pyro_bnn.dwp import DeepWeightPrior, KernelVAE

TINY_DWP = DeepWeightPrior(
    {
        "*conv1": KernelVAE(kernel_size=7, z_dim=2, hidden=2),
        "*conv2": KernelVAE(kernel_size=5, z_dim=4, hidden=2),
    }
)

CASES = {
    "mlp-regression": (dict(in_features=3, hidden=(8, 8)), torch.randn(12)),
    "mlp-heteroscedastic": (dict(in_features=3, hidden=(8,)), torch.randn(12)),
    "mlp-classification": (
        dict(in_features=3, num_classes=4, hidden=(8,)),
        torch.randint(0, 4, (12,)),
    ),
    "bayesian-linear-regression": (dict(in_features=3), torch.randn(12)),
    "uci-mlp": (dict(in_features=3, hidden=8), torch.randn(12)),
    "bbb-mlp": (dict(in_features=3, num_classes=4, width=8), torch.randint(0, 4, (12,))),
    "dwp-cnn": (
        dict(prior=TINY_DWP, widths=(2, 3), num_classes=4, image_size=20),
        torch.randint(0, 4, (12,)),
    ),
    "gaussian-mixture-25": ({}, torch.randn(12)),
}
# the shape of one input row, where it is not 3 features
INPUT_SHAPES = {"dwp-cnn": (1, 20, 20)}
SITES = {
    "dwp-cnn": {
        "net.conv1.weight.z": (2, 1, 2),
        "net.conv1.weight": (2, 1, 7, 7),
        "net.conv2.weight.z": (3, 2, 4),
        "net.conv2.weight": (3, 2, 5, 5),
        "obs": (12,),
    },
    "bbb-mlp": {
        "net.0.weight": (8, 3),
        "net.0.bias": (8,),
        "net.2.weight": (8, 8),
        "net.2.bias": (8,),
        "net.4.weight": (4, 8),
        "net.4.bias": (4,),
        "obs": (12,),
    },
    "uci-mlp": {
        "net.0.weight": (8, 3),
        "net.0.bias": (8,),
        "net.2.weight": (1, 8),
        "net.2.bias": (1,),
        "precision": (),
        "obs": (12,),
    },
    "mlp-regression": {
        "net.0.weight": (8, 3),
        "net.0.bias": (8,),
        "net.2.weight": (8, 8),
        "net.2.bias": (8,),
        "net.4.weight": (1, 8),
        "net.4.bias": (1,),
        "precision": (),
        "obs": (12,),
    },
    "mlp-heteroscedastic": {
        "net.0.weight": (8, 3),
        "net.0.bias": (8,),
        "net.2.weight": (2, 8),
        "net.2.bias": (2,),
        "obs": (12,),
    },
    "mlp-classification": {
        "net.0.weight": (8, 3),
        "net.0.bias": (8,),
        "net.2.weight": (4, 8),
        "net.2.bias": (4,),
        "obs": (12,),
    },
    "bayesian-linear-regression": {"linear.weight": (1, 3), "linear.bias": (1,), "obs": (12,)},
    "gaussian-mixture-25": {"theta": (2,), "obs": (12,)},
}


def test_zoo_lists_every_model(capsys):
    assert set(zoo.names()) == set(CASES)
    assert main(["zoo", "list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in CASES)
    with pytest.raises(ValueError, match="unknown zoo model 'resnet'"):
        zoo.build("resnet")


ZOO = Path(zoo.__file__).parent


def test_the_table_names_every_module_and_card_of_the_zoo():
    modules = {p.stem for p in ZOO.glob("*.py")} - {"__init__"}
    assert {e.module.rsplit(".", 1)[1] for e in zoo.entries()} == modules
    assert {e.card for e in zoo.entries() if e.card} == {p.name for p in ZOO.glob("*.md")}
    for entry in zoo.entries():
        assert callable(entry.builder)
        if entry.card:
            assert zoo.card(entry.name) == (ZOO / entry.card).read_text()
            assert entry.card == entry.module.rsplit(".", 1)[1] + ".md"  # beside its module
    with pytest.raises(ValueError, match="has no card; models with one"):
        zoo.card("mlp-regression")


@pytest.mark.parametrize("path", sorted(ZOO.glob("*.py")), ids=lambda p: p.name)
def test_model_modules_do_not_import_the_zoo_table(path):
    """A model module imports its siblings (``pyro_bnn.zoo.<module>``), never the table in
    ``pyro_bnn.zoo`` itself: no registration by import, no import circle."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "pyro_bnn.zoo":
            pytest.fail(f"{path.name} imports {[a.name for a in node.names]} from pyro_bnn.zoo")
        if isinstance(node, ast.Import):
            assert "pyro_bnn.zoo" not in [a.name for a in node.names], path.name


@pytest.mark.parametrize("name", sorted(CASES))
def test_zoo_model(name):
    kwargs, y = CASES[name]
    shape = INPUT_SHAPES.get(name, (3,))
    x = torch.randn(12, *shape)
    model = zoo.build(name, **kwargs)
    trace = poutine.trace(model).get_trace(x, y)
    shapes = {
        n: tuple(s["value"].shape)
        for n, s in trace.nodes.items()
        if s["type"] == "sample" and n != "data"
    }
    assert shapes == SITES[name]
    prior_predictive = model(x)
    assert prior_predictive.shape == (12,)

    post = fit(model, x, y, method="meanfield", num_steps=5, num_draws=7, progress_bar=False)
    assert all(torch.isfinite(torch.tensor(post.losses[0])))
    pred = post.predict(torch.randn(5, *shape), num_samples=7)
    assert pred.samples.shape == (7, 5)
    assert pred.mean.shape == pred.std.shape == (5,)
    if name in ("mlp-classification", "bbb-mlp", "dwp-cnn"):
        assert pred.probs.shape == (5, 4)
        torch.testing.assert_close(pred.probs.sum(-1), torch.ones(5))
    else:
        torch.testing.assert_close(pred.std**2, pred.epistemic_var + pred.aleatoric_var)


def test_binary_classifier_uses_bernoulli():
    model = zoo.build("mlp-classification", in_features=2, num_classes=2, binary=True, hidden=(4,))
    x, y = torch.randn(9, 2), torch.randint(0, 2, (9,))
    post = fit(model, x, y, method="map", num_steps=5, progress_bar=False)
    pred = post.predict(x, num_samples=3)
    assert pred.probs.shape == (9, 2)
