import pyro
import pytest
import torch

from pyro_bnn import zoo
from pyro_bnn.replay import _sequential, _vectorized, replay


def _prior_draws(model, x, num):
    draws = [pyro.poutine.trace(model).get_trace(x) for _ in range(num)]
    names = [
        n
        for n, s in draws[0].nodes.items()
        if s["type"] == "sample" and not s["is_observed"] and n not in ("data", "obs")
    ]
    return {n: torch.stack([t.nodes[n]["value"] for t in draws]) for n in names}


@pytest.mark.parametrize(
    "name,kwargs,y",
    [
        ("mlp-regression", dict(in_features=3, hidden=(6,)), torch.randn(5)),
        (
            "mlp-classification",
            dict(in_features=3, num_classes=3, hidden=(6,)),
            torch.tensor([0, 1, 2, 1, 0]),
        ),
    ],
)
def test_vectorised_replay_equals_one_draw_at_a_time(name, kwargs, y):
    model = zoo.build(name, **kwargs)
    x = torch.randn(5, 3)
    draws = _prior_draws(model, x, 4)
    fast = _vectorized(model, draws, x, y, with_joint=True)
    slow = _sequential(model, draws, x, y, with_joint=True)
    assert fast is not None
    for field in ("loc", "noise_var", "probs", "log_lik", "log_joint"):
        a, b = getattr(fast, field), getattr(slow, field)
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert fast.log_joint.shape == (4,)


def test_replay_batches_rows_and_draws():
    model = zoo.build("mlp-regression", in_features=2, hidden=(4,))
    x = torch.randn(25, 2)
    draws = _prior_draws(model, x, 9)
    whole = replay(model, draws, x, draw_chunk=100, row_batch=100)
    pieces = replay(model, draws, x, draw_chunk=4, row_batch=7)
    torch.testing.assert_close(whole.loc, pieces.loc)
    assert pieces.value.shape == (9, 25)
