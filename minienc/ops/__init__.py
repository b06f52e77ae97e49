"""Differentiable operations, grouped by kind. Each is a `Function` subclass with a small
functional wrapper; `Tensor` methods and operators call the wrappers. Each class is the reference:
the formula of its docstring. Where a faster variant exists (minienc/kernels/), the wrapper asks
`kernels.variant(Class, x)` which one to run."""
from .elementwise import (abs, add, astype, clip, div, exp, gelu, log, maximum, minimum, mul, neg,
                          pow, relu, sigmoid, softplus, sqrt, sub, tanh, where)
from .linalg import matmul
from .losses import (binary_cross_entropy_with_logits, cross_entropy, log_softmax, logsumexp,
                     mse_loss, normalize, smooth_l1_loss, softmax)
from .reduce import max, mean, min, off_diagonal_square_sum, sum, var
from .shape import (broadcast_to, concatenate, getitem, reshape, squeeze, stack, transpose,
                    unsqueeze)
from .linear import linear
from .dropout import dropout
from .embedding import embedding
from .norm import batch_norm, layer_norm
from .conv import conv2d, conv_transpose2d
from .pool import avg_pool2d, max_pool2d
from .attention import multi_head_attention, scaled_dot_product_attention
