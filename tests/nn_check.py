"""Test helpers shared by the nn test files: gradcheck a module with respect to its input(s) AND
its parameters, by casting the module to float64 and binding its parameters through
`functional_call`, so every parameter is an explicit input of the checked function."""
import numpy as np

import minienc
from minienc import nn


def rand(device, *shape, seed=0, scale=1.0, requires_grad=True):
    data = np.random.default_rng(seed).standard_normal(shape) * scale
    return minienc.tensor(data, requires_grad=requires_grad, dtype="float64", device=device)


def gradcheck_module(module, *inputs, reseed=False, **kwargs):
    """gradcheck of module(*inputs) w.r.t. every input that requires grad and every parameter.
    reseed=True re-seeds the RNG before each call (dropout must draw the same mask each time)."""
    module.astype("float64")
    names = [name for name, _ in module.named_parameters()]
    params = [p for _, p in module.named_parameters()]
    n = len(inputs)

    def fn(*args):
        if reseed:
            minienc.manual_seed(1234)
        return nn.functional_call(module, dict(zip(names, args[n:])), *args[:n])

    return minienc.gradcheck(fn, *inputs, *params, **kwargs)
