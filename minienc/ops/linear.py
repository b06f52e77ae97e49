"""linear(x, weight, bias) = x @ weight.T + bias as one fused op.

One op instead of transpose + matmul + add: fewer graph nodes and temporaries on the hottest path
of every model. Inputs with more than two dimensions (tokens: (B, L, D)) are folded to 2-D, so the
forward and both weight gradients are single matrix products, never a stack of small ones.
The weight has PyTorch's layout (out_features, in_features).
"""
from ..engine import Function


def _check_shapes(x, weight):
    """The one check of a linear map's shapes, for nn.Linear and direct callers alike (the error
    names the layer the weight would make)."""
    if weight.ndim != 2:
        raise ValueError(f"linear: weight must be 2-D (out_features, in_features), got shape "
                         f"{tuple(weight.shape)}")
    out_features, in_features = weight.shape
    if x.ndim < 1 or x.shape[-1] != in_features:
        raise ValueError(f"linear: a weight of shape {tuple(weight.shape)}, as in "
                         f"Linear({in_features}, {out_features}), takes inputs (..., {in_features}); "
                         f"got shape {tuple(x.shape)}")


class LinearFunction(Function):
    name = "linear"

    def forward(self, x, weight, bias=None):
        _check_shapes(x, weight)
        self.x2, self.weight, self.has_bias = x.reshape(-1, x.shape[-1]), weight, bias is not None
        out = self.x2 @ weight.T
        if bias is not None:
            out += bias  # in place: `out` is our own fresh array
        return out.reshape(x.shape[:-1] + (weight.shape[0],))

    def backward(self, g):
        g2 = g.reshape(-1, g.shape[-1])
        gx = (g2 @ self.weight).reshape(g.shape[:-1] + (self.weight.shape[1],)) \
            if self.needs_grad[0] else None
        gw = g2.T @ self.x2 if self.needs_grad[1] else None
        if not self.has_bias:
            return gx, gw
        return gx, gw, (g2.sum(axis=0) if self.needs_grad[2] else None)


def linear(x, weight, bias=None):
    fn = LinearFunction()
    return fn(x, weight) if bias is None else fn(x, weight, bias)
