"""minienc: a minimal NumPy/CuPy library for training encoders, written to be read."""
from . import ops, viz  # noqa: F401  (minienc.viz.graph: the computation graph as DOT)
from .backend import cuda_available, get_device, manual_seed, set_device
from .gradcheck import GradcheckError, gradcheck
from .ops import *  # noqa: F401,F403  (the functional API: minienc.relu, minienc.cross_entropy, ...)
from .creation import ones, ones_like, rand, randn, zeros, zeros_like
from .engine import (Function, Tensor, as_array, as_tensor, detect_anomaly, enable_grad,
                     is_grad_enabled, no_grad, tensor)

__version__ = "0.1.0"
