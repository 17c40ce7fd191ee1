"""Root conftest: every test starts seeded, with an empty param store and validation on."""

import matplotlib
import pyro
import pytest

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def pyro_state():
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    pyro.enable_validation(True)
    yield
    pyro.clear_param_store()
