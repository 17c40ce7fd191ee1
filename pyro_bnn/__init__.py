"""pyro-bnn: Bayesian neural networks as ordinary Pyro models.

Example:
    >>> import pyro_bnn
    >>> {"meanfield", "nuts", "sgld", "dwp"} <= set(pyro_bnn.METHODS)
    True
"""

from pyro_bnn import zoo
from pyro_bnn.arviz import to_inference_data
from pyro_bnn.bayesianize import bayesianize
from pyro_bnn.diagnostics import ConvergenceWarning, SamplingWarning
from pyro_bnn.infer import METHODS, fit
from pyro_bnn.io import load
from pyro_bnn.posterior import Posterior, Prediction
from pyro_bnn.priors import FanInGaussianPrior, GaussianPrior, Selector

__all__ = [
    "METHODS",
    "ConvergenceWarning",
    "FanInGaussianPrior",
    "GaussianPrior",
    "Posterior",
    "Prediction",
    "SamplingWarning",
    "Selector",
    "bayesianize",
    "fit",
    "load",
    "to_inference_data",
    "zoo",
]
__version__ = "0.1.0"
