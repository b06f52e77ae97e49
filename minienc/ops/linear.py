"""linear(x, weight, bias) = x @ weight.T + bias as one fused op.

One op instead of transpose + matmul + add: fewer graph nodes and temporaries on the hottest path
of every model. Inputs with more than two dimensions (tokens: (B, L, D)) are folded to 2-D, so the
forward and both weight gradients are single matrix products, never a stack of small ones.
The weight has PyTorch's layout (out_features, in_features).
"""
from ..engine import Function


class LinearFunction(Function):
    name = "linear"

    def forward(self, x, weight, bias=None):
        if weight.ndim != 2 or x.ndim < 1 or x.shape[-1] != weight.shape[1]:
            raise ValueError(f"linear: input of shape {tuple(x.shape)} does not match a weight of "
                             f"shape {tuple(weight.shape)} (out_features, in_features)")
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
