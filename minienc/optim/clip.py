"""Gradient clipping by global norm, without reading the norm back to the host.

    total = sqrt(sum over parameters of ||g||^2)
    g    <- g * min(1, max_norm / (total + eps))

The usual `if total > max_norm:` would force a GPU->CPU sync every step; multiplying by the
clamped factor (1 when the norm is small) gives the same result and stays on the device.
"""
from ..backend import get_xp
from ..engine import as_tensor


def grad_norm(params):
    """The global L2 norm of the gradients of `params` as a 0-d device array (None if no grads)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return None
    xp = get_xp(grads[0])
    total = 0.0
    for g in grads:
        flat = g.reshape(-1)  # a view for contiguous gradients; dot needs no g*g temporary
        total = total + xp.dot(flat, flat)
    return xp.sqrt(total)


def clip_grad_norm(params, max_norm, eps=1e-6):
    """Scale the gradients of `params` in place so their global norm is at most `max_norm`.
    Returns the norm before clipping as a 0-d Tensor (call .item() only when you log it)."""
    if not max_norm > 0:
        raise ValueError(f"clip_grad_norm: max_norm must be > 0, got {max_norm!r}")
    params = list(params)
    total = grad_norm(params)
    if total is None:
        return None
    scale = get_xp(total).minimum(max_norm / (total + eps), 1.0)
    for p in params:
        if p.grad is not None:
            p.grad *= scale
    return as_tensor(total)
