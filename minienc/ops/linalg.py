"""Matrix multiplication, batched over leading axes with broadcasting."""
from ..engine import Function


class MatMul(Function):
    def forward(self, x, y):
        self.x, self.y = x, y   # shapes checked by matmul(), on the caller's operands
        return x @ y

    def backward(self, g):
        x, y = self.x, self.y
        gx = g @ y.swapaxes(-1, -2) if self.needs_grad[0] else None
        gy = None
        if self.needs_grad[1]:
            if y.ndim == 2 and x.ndim > 2:
                # a weight shared over a batch: one big matmul instead of a stack of them, then a sum
                gy = x.reshape(-1, x.shape[-1]).T @ g.reshape(-1, g.shape[-1])
            else:
                gy = x.swapaxes(-1, -2) @ g
        return gx, gy


def matmul(x, y):
    """x @ y; 1-D operands are treated as a row (left) or a column (right), as NumPy does."""
    from .shape import reshape
    x_shape, y_shape = tuple(getattr(x, "shape", ())), tuple(getattr(y, "shape", ()))
    if not x_shape or not y_shape or x_shape[-1] != y_shape[-2 if len(y_shape) > 1 else 0]:
        # checked on the caller's shapes, before 1-D operands are reshaped
        raise ValueError(f"matmul: shapes {x_shape} and {y_shape} do not align")
    squeeze_left, squeeze_right = len(x_shape) == 1, len(y_shape) == 1
    if squeeze_left:
        x = reshape(x, 1, -1)
    if squeeze_right:
        y = reshape(y, -1, 1)
    out = MatMul()(x, y)
    if squeeze_left or squeeze_right:
        shape = out.shape
        if squeeze_right:
            shape = shape[:-1]
        if squeeze_left:
            shape = shape[:-2] + shape[-1:] if not squeeze_right else shape[:-1]
        out = reshape(out, shape)
    return out
