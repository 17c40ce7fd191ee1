"""The pyro-bnn model zoo. Each module defines one model and registers it by name.

Use it through :mod:`pyro_bnn.zoo` (``zoo.build("mlp-regression", in_features=3)``) or
import a model class directly (``from models.mlp_regression import MLPRegression``).
"""

from models import (
    bayesian_linear_regression,
    bbb_mlp,
    dwp_cnn,
    mlp_classification,
    mlp_regression,
    uci_mlp,
)

__all__ = [
    "bayesian_linear_regression",
    "bbb_mlp",
    "dwp_cnn",
    "mlp_classification",
    "mlp_regression",
    "uci_mlp",
]
