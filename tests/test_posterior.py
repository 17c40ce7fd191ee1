import pytest
import torch

from pyro_bnn import Posterior, fit, zoo


@pytest.fixture(scope="module")
def regression_posterior():
    x = torch.linspace(-2, 2, 40)[:, None]
    y = torch.sin(2 * x[:, 0])
    model = zoo.build("mlp-regression", in_features=1, hidden=(10,))
    return fit(
        model,
        x,
        y,
        method="meanfield",
        num_steps=200,
        lr=0.02,
        num_draws=50,
        progress_bar=False,
        seed=0,
    )


def test_prediction_summaries(regression_posterior):
    pred = regression_posterior.predict(torch.zeros(7, 1), num_samples=2000, seed=0)
    assert pred.samples.shape == (2000, 7)
    torch.testing.assert_close(pred.std**2, pred.epistemic_var + pred.aleatoric_var)
    # the predictive draws have the summarised mean and spread, within Monte Carlo error
    se = pred.std / 2000**0.5
    assert torch.all((pred.samples.mean(0) - pred.mean).abs() < 4 * se)
    assert torch.allclose(pred.samples.std(0), pred.std, rtol=0.1)
    lower, upper = pred.interval(0.9)
    torch.testing.assert_close(pred.quantiles([0.05, 0.95]), torch.stack([lower, upper]))
    assert torch.all(lower < pred.mean) and torch.all(pred.mean < upper)
    with pytest.raises(ValueError, match="level"):
        pred.interval(1.5)
    with pytest.raises(ValueError, match="classifiers"):
        pred.predicted_class  # noqa: B018


def test_flat_draws_thins_and_repeats(regression_posterior):
    assert regression_posterior.flat_draws()["precision"].shape == (50,)
    thinned = regression_posterior.flat_draws(10)["precision"]
    assert thinned.shape == (10,) and len(thinned.unique()) == 10
    assert regression_posterior.flat_draws(120)["precision"].shape == (120,)
    with pytest.raises(ValueError, match="positive"):
        regression_posterior.flat_draws(0)


def test_log_likelihood_layout(regression_posterior):
    ll = regression_posterior.log_likelihood(torch.zeros(3, 1), torch.zeros(3))
    assert ll.shape == (1, 50, 3)
    with pytest.raises(ValueError, match="NaN"):
        regression_posterior.predict(torch.full((2, 1), float("nan")))


def test_classifier_prediction():
    x = torch.randn(30, 2)
    y = (x[:, 0] > 0).long()
    post = fit(
        zoo.build("mlp-classification", in_features=2, num_classes=2, hidden=(8,)),
        x,
        y,
        method="map",
        num_steps=300,
        lr=0.05,
        progress_bar=False,
        seed=0,
    )
    pred = post.predict(x, num_samples=1)
    assert (pred.predicted_class == y).float().mean() > 0.9
    torch.testing.assert_close(pred.mean, pred.probs[:, 1])


def test_predict_names_a_wrong_number_of_features(regression_posterior):
    with pytest.raises(ValueError, match="x has 3 features but the model was fitted on 1"):
        regression_posterior.predict(torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"x has shape \(4, 1, 1\)"):
        regression_posterior.log_likelihood(torch.zeros(4, 1, 1), torch.zeros(4))


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("row_batch", 0, ValueError),
        ("draw_chunk", -1, ValueError),
        ("row_batch", 2.5, TypeError),
        ("draw_chunk", "10", TypeError),
    ],
)
def test_batch_sizes_are_checked(regression_posterior, option, value, error):
    match = f"{option} must be a positive integer"
    with pytest.raises(error, match=match):
        regression_posterior.predict(torch.zeros(4, 1), **{option: value})
    with pytest.raises(error, match=match):
        regression_posterior.log_likelihood(torch.zeros(4, 1), torch.zeros(4), **{option: value})


def test_num_samples_and_seed_are_checked(regression_posterior):
    with pytest.raises(TypeError, match=r"num_samples must be a positive integer, got 2\.5"):
        regression_posterior.predict(torch.zeros(4, 1), num_samples=2.5)
    with pytest.raises(TypeError, match="seed must be an integer"):
        regression_posterior.predict(torch.zeros(4, 1), seed="abc")


def test_a_posterior_of_a_wrongly_shaped_model_never_predicts_a_square(regression_posterior):
    """Even a Posterior whose model broadcasts its (N, 1) output against the plate (built
    by hand: fit refuses the model) raises instead of returning (7, 7) predictions."""
    from tests.test_validation import Handwritten

    model = Handwritten(squeeze=False)
    draws = {
        "hidden.weight": torch.randn(1, 3, 5, 1),
        "hidden.bias": torch.randn(1, 3, 5),
        "out.weight": torch.randn(1, 3, 1, 5),
        "out.bias": torch.randn(1, 3, 1),
    }
    x = torch.zeros(7, 1)
    post = Posterior(model=model, method="map", draws=draws, x_train=x, y_train=torch.zeros(7))
    with pytest.raises(ValueError, match=r"batch shape \(7, 7\).*squeeze\(-1\)"):
        post.predict(x)
    with pytest.raises(ValueError, match=r"batch shape \(7, 7\)"):
        post.log_likelihood(x, torch.zeros(7))


def test_log_likelihood_needs_y(regression_posterior):
    """Found by tests/test_fuzz.py: y=None replayed without a likelihood and failed inside."""
    with pytest.raises(TypeError, match="log_likelihood needs y"):
        regression_posterior.log_likelihood(torch.zeros(2, 1), None)
