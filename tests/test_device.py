"""``fit(..., device=...)``: the model, data and inference on a torch device; the posterior
predicts there. The CPU path runs always; the CUDA path where a GPU is present."""

import pytest
import torch

from pyro_bnn import fit, load, zoo

X = torch.linspace(-1, 1, 32)[:, None]
Y = torch.sin(3 * X[:, 0])


def _fit(device, method="meanfield", **options):
    model = zoo.build("mlp-regression", in_features=1, hidden=(8,))
    return fit(model, X, Y, method=method, device=device, progress_bar=False, seed=0,
               num_steps=100, **options)  # fmt: skip


def test_the_cpu_path_gives_what_no_device_gives():
    on_cpu = _fit("cpu", num_draws=20)
    model = zoo.build("mlp-regression", in_features=1, hidden=(8,))
    default = fit(model, X, Y, method="meanfield", progress_bar=False, seed=0, num_steps=100,
                  num_draws=20)  # fmt: skip
    assert on_cpu.device == torch.device("cpu")
    for name, value in default.draws.items():
        assert torch.equal(on_cpu.draws[name], value)
    assert torch.equal(on_cpu.predict(X, seed=1).mean, default.predict(X, seed=1).mean)


def test_a_device_that_is_not_there_is_a_clear_error():
    with pytest.raises(ValueError, match="device must be a torch device"):
        _fit("banana")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="torch sees no CUDA GPU here"):
            _fit("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; none here")
@pytest.mark.parametrize("method", ["map", "meanfield", "nuts", "laplace"])
def test_the_cuda_path(method, tmp_path):
    options = dict(num_samples=20, warmup_steps=20) if method == "nuts" else dict(num_steps=100)
    model = zoo.build("mlp-regression", in_features=1, hidden=(8,))
    post = fit(model, X.numpy(), Y.numpy(), method=method, device="cuda", progress_bar=False,
               seed=0, **options)  # fmt: skip
    assert post.device.type == "cuda"
    assert all(v.device.type == "cuda" for v in post.draws.values())
    pred = post.predict(X)  # CPU inputs follow the posterior to its device
    assert pred.mean.device.type == "cuda" and bool(torch.isfinite(pred.std).all())
    post.save(tmp_path / "p.safetensors")
    again = load(tmp_path / "p.safetensors")  # loaded on the CPU
    assert torch.allclose(again.predict(X, seed=2).mean, post.predict(X, seed=2).mean.cpu(),
                          atol=1e-5)  # fmt: skip
