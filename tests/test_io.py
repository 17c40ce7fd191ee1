"""Saving and loading posteriors (``pyro_bnn.io``): round trips, and every kind of bad file.

The contract test (``tests/infer/test_contract.py``) saves and loads a posterior of every
method and checks that it predicts the same draws at the same seed and gives identical
InferenceData; here: a zoo model rebuilt from the file, hand-written models checked
against it, and truncated, corrupt, foreign, newer and hostile files.
"""

import json
import os

import pytest
import torch
from safetensors.torch import save as save_tensors

from pyro_bnn import fit, load, zoo
from pyro_bnn.io import FORMAT_VERSION, HEADER_KEY, PosteriorFileError, from_bytes, to_bytes
from pyro_bnn.zoo.bayesian_linear_regression import BayesianLinearRegression

X = torch.linspace(-1, 1, 24)[:, None]
Y = 2 * X[:, 0] + 0.1 * torch.randn(24, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def posterior():
    model = zoo.build("mlp-regression", in_features=1, hidden=(8,), noise_scale=None)
    return fit(model, X, Y, method="meanfield", num_steps=200, num_draws=30, progress_bar=False,
               seed=0)  # fmt: skip


def _rewrite_header(data: bytes, change) -> bytes:
    """The file with its pyro_bnn header changed by ``change(header)`` (tensors kept) and
    its checksum recomputed, as a deliberate forger would."""
    from safetensors.torch import load as load_tensors

    from pyro_bnn.io import _digest

    size = int.from_bytes(data[:8], "little")
    header = json.loads(json.loads(data[8 : 8 + size])["__metadata__"][HEADER_KEY])
    change(header)
    tensors = load_tensors(data)
    header["sha256"] = _digest(tensors, header)
    return save_tensors(tensors, metadata={HEADER_KEY: json.dumps(header)})


def test_a_zoo_model_is_rebuilt_from_the_file(posterior, tmp_path):
    path = tmp_path / "post.safetensors"
    posterior.save(path)
    again = load(path)
    assert again.model is not posterior.model and again.model.zoo_spec == posterior.model.zoo_spec
    assert again.method == "meanfield" and again.options == posterior.options
    for name, value in posterior.draws.items():
        assert torch.equal(again.draws[name], value)
    a, b = posterior.predict(X, seed=7), again.predict(X, seed=7)
    assert torch.equal(a.samples, b.samples) and torch.equal(a.std, b.std)
    assert again.losses == posterior.losses and again.diagnostics == posterior.diagnostics


def test_a_learned_noise_parameter_and_its_constraint_survive(tmp_path):
    model = zoo.build("mlp-regression", in_features=1, hidden=(4,), noise_scale=None)
    post = fit(model, X, Y, method="map", num_steps=50, progress_bar=False, seed=1)
    post.save(tmp_path / "map.safetensors")
    again = load(tmp_path / "map.safetensors")
    saved, loaded = post.param_states[0]["constraints"], again.param_states[0]["constraints"]
    assert saved.keys() == loaded.keys() and saved
    for name, constraint in saved.items():  # the same constraint objects (Pyro's singletons)
        assert type(loaded[name]) is type(constraint), name
        assert getattr(loaded[name], "base_constraint", None) is getattr(
            constraint, "base_constraint", None), name  # fmt: skip
        assert repr(loaded[name]) == repr(constraint), name
    assert torch.equal(again.predict(X, seed=0).mean, post.predict(X, seed=0).mean)


def test_a_hand_written_model_must_be_passed_and_match(tmp_path):
    model = BayesianLinearRegression(in_features=1)
    post = fit(model, X, Y, method="map", num_steps=50, progress_bar=False, seed=0)
    path = tmp_path / "blr.safetensors"
    post.save(path)
    with pytest.raises(ValueError, match=r"cannot be rebuilt from the file.*model="):
        load(path)
    assert torch.equal(load(path, model=BayesianLinearRegression(in_features=1)).draws[
        "linear.weight"], post.draws["linear.weight"])  # fmt: skip
    with pytest.raises(ValueError, match=r"fails on the saved training inputs, of shape \(1,\)"):
        load(path, model=BayesianLinearRegression(in_features=2))
    other = zoo.build("mlp-regression", in_features=1, hidden=(3,))
    with pytest.raises(ValueError, match=r"sites in the file but not the model: \['linear.bias'"):
        load(path, model=other)


def test_a_save_is_atomic(posterior, tmp_path, monkeypatch):
    path = tmp_path / "post.safetensors"
    posterior.save(path)
    before = path.read_bytes()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        posterior.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["post.safetensors"]  # no leftovers


def test_truncated_empty_and_foreign_files_are_named(posterior, tmp_path):
    data = to_bytes(posterior)
    with pytest.raises(PosteriorFileError, match="truncated"):
        from_bytes(data[: len(data) // 2])
    with pytest.raises(PosteriorFileError, match="empty or truncated"):
        from_bytes(b"")
    with pytest.raises(PosteriorFileError, match="not a pyro-bnn posterior"):
        from_bytes(b"x" * 100)
    foreign = save_tensors({"weight": torch.zeros(3)})
    with pytest.raises(PosteriorFileError, match="safetensors file, but not a pyro-bnn"):
        from_bytes(foreign)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(PosteriorFileError, match="not a pyro-bnn posterior"):
        load(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError, match="no posterior file"):
        load(tmp_path / "missing.safetensors")


def test_a_flipped_byte_in_the_tensors_is_caught(posterior):
    data = bytearray(to_bytes(posterior))
    data[-5] ^= 0xFF
    with pytest.raises(PosteriorFileError, match="corrupt: its header and tensors do not"):
        from_bytes(bytes(data))


def test_an_edited_header_without_its_checksum_is_caught(posterior):
    data = to_bytes(posterior)
    edited = data.replace(b'\\"num_draws\\": 30', b'\\"num_draws\\": 31')
    assert edited != data
    with pytest.raises(PosteriorFileError, match="corrupt: its header and tensors do not"):
        from_bytes(edited)


def test_a_newer_format_version_says_to_upgrade(posterior):
    def newer(header):
        header["format_version"] = FORMAT_VERSION + 1

    with pytest.raises(PosteriorFileError, match=r"format version 2.*upgrade pyro-bnn"):
        from_bytes(_rewrite_header(to_bytes(posterior), newer))


def test_loading_runs_no_code_from_the_file(posterior):
    """A header naming a type or a model builder outside the library's tables is refused;
    nothing in the file is imported or called."""

    def hostile_state(header):
        header["states"] = [{"state": "os.system", "fields": {"command": "touch /tmp/owned"}}]

    with pytest.raises(PosteriorFileError, match=r"unknown state type 'os.system'"):
        from_bytes(_rewrite_header(to_bytes(posterior), hostile_state))

    def hostile_model(header):
        header["model"]["zoo"] = {"name": "os.system", "kwargs": {}}

    with pytest.raises(PosteriorFileError, match=r"unknown zoo model 'os.system'"):
        from_bytes(_rewrite_header(to_bytes(posterior), hostile_model))

    def hostile_method(header):
        header["method"] = "__import__"

    with pytest.raises(PosteriorFileError, match="unknown method '__import__'"):
        from_bytes(_rewrite_header(to_bytes(posterior), hostile_method))


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("laplace", dict(num_steps=100, hessian_structure="kron", num_draws=20)),
        ("swag", dict(num_steps=100, swa_epochs=5, burn_in_epochs=1, num_draws=10)),
        ("dvi", dict(num_steps=100, num_draws=20)),
    ],
)
def test_a_method_state_comes_back_on_a_rebuilt_zoo_model(method, options, tmp_path):
    """Laplace's Gaussian, SWAG's moments and DVI's moments come back from the file alone;
    the rebuilt zoo model predicts what the fitted one did."""
    model = zoo.build("mlp-regression", in_features=1, hidden=(6,))
    post = fit(model, X, Y, method=method, progress_bar=False, seed=2, **options)
    post.save(tmp_path / "p.safetensors")
    again = load(tmp_path / "p.safetensors")
    assert type(again.states[0]) is type(post.states[0])
    a, b = post.predict(X, seed=4), again.predict(X, seed=4)
    assert torch.equal(a.mean, b.mean) and torch.equal(a.std, b.std)


def test_options_that_are_not_data_are_kept_as_text(tmp_path):
    from pyro.infer.autoguide import init_to_median

    model = zoo.build("mlp-regression", in_features=1, hidden=(4,))
    post = fit(model, X, Y, method="map", num_steps=20, init_loc_fn=init_to_median,
               progress_bar=False, seed=0)  # fmt: skip
    post.save(tmp_path / "p.safetensors")
    again = load(tmp_path / "p.safetensors")
    assert again.options["init_loc_fn"] == {"repr": repr(init_to_median)}
