import pytest
import torch
from pyro import poutine

from pyro_bnn.likelihoods import Bernoulli, Categorical, Gaussian, ScaleDataPlate


def _trace(fn, *args):
    return poutine.trace(fn).get_trace(*args)


def test_gaussian_fixed_and_learned_noise():
    fixed = _trace(Gaussian(scale=0.3), torch.zeros(6), torch.ones(6))
    assert fixed.nodes["obs"]["is_observed"]
    torch.testing.assert_close(fixed.nodes["obs"]["fn"].scale, torch.full((6,), 0.3))
    learned = _trace(Gaussian(), torch.zeros(6), torch.ones(6))
    assert "precision" in learned.nodes
    assert learned.nodes["precision"]["cond_indep_stack"] == ()  # global, outside the plate
    precision = learned.nodes["precision"]["value"]
    torch.testing.assert_close(learned.nodes["obs"]["fn"].scale, precision.rsqrt().expand(6))


def test_plate_is_named_data_and_sized_to_the_dataset():
    trace = _trace(Gaussian(scale=1.0, num_data=100), torch.zeros(10), torch.zeros(10))
    frame = trace.nodes["obs"]["cond_indep_stack"][0]
    assert frame.name == "data" and frame.full_size == 100 and frame.size == 10
    assert trace.nodes["obs"]["scale"] == pytest.approx(10.0)


@pytest.mark.parametrize("num_data_in_likelihood", [None, 100])
def test_scale_data_plate_scales_only_data_sites(num_data_in_likelihood):
    lik = Gaussian(num_data=num_data_in_likelihood)
    trace = _trace(ScaleDataPlate(100)(lik), torch.zeros(10), torch.zeros(10))
    assert trace.nodes["obs"]["scale"] == pytest.approx(10.0)  # N / batch, never squared
    assert trace.nodes["precision"]["scale"] == 1.0


def test_categorical_checks_labels():
    logits = torch.zeros(4, 3)
    trace = _trace(Categorical(), logits, torch.tensor([0, 1, 2, 1]))
    assert trace.nodes["obs"]["value"].dtype == torch.long
    with pytest.raises(ValueError, match=r"labels \[3\] are outside the model's classes 0..2"):
        _trace(Categorical(), logits, torch.tensor([0, 1, 3, 1]))
    with pytest.raises(ValueError, match="whole numbers"):
        _trace(Categorical(), logits, torch.tensor([0.5, 1, 2, 1]))


def test_bernoulli_checks_labels():
    trace = _trace(Bernoulli(), torch.zeros(3), torch.tensor([0, 1, 1]))
    assert trace.nodes["obs"]["value"].dtype == torch.float32
    with pytest.raises(ValueError, match="outside"):
        _trace(Bernoulli(), torch.zeros(3), torch.tensor([0, 2, 1]))


def test_gaussian_rejects_conflicting_noise_settings():
    with pytest.raises(ValueError, match="not both"):
        Gaussian(scale=1.0, precision_prior=torch.distributions.Gamma(1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        Gaussian(scale=0.0)
