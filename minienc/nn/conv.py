"""Convolution and pooling layers (the im2col math lives in minienc/ops/conv.py and pool.py).

Initialisation is PyTorch's: kaiming_uniform(a=sqrt(5)) for the weight, U(+-1/sqrt(fan_in)) for
the bias, where fan_in is computed from the weight's shape as PyTorch does (for ConvTranspose2d,
whose weight is (C_in, C_out, kh, kw), that is C_out * kh * kw).
"""
import math

from .. import checks, ops
from . import init
from .module import Module


class _ConvNd(Module):
    def _check_arguments(self, in_channels, out_channels, kernel_size, stride, padding):
        name = type(self).__name__
        self.in_channels = checks.positive_int(name, "in_channels", in_channels)
        self.out_channels = checks.positive_int(name, "out_channels", out_channels)
        self.kernel_size = checks.pair(name, "kernel_size", kernel_size, minimum=1)
        self.stride = checks.pair(name, "stride", stride, minimum=1)
        self.padding = checks.pair(name, "padding", padding, minimum=0)

    def _init_parameters(self, shape, bias):
        self.weight = init.kaiming_uniform(init.empty(shape), a=math.sqrt(5.0))
        fan_in = init._fans(shape)[0]
        self.bias = init.linear_bias(init.empty((self.out_channels,)), fan_in) if bias else None

    def __repr__(self):
        extra = f", output_padding={self.output_padding}" if getattr(self, "output_padding", (0, 0)) != (0, 0) else ""
        return (f"{type(self).__name__}({self.in_channels}, {self.out_channels}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}{extra})")


class Conv2d(_ConvNd):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        self._check_arguments(in_channels, out_channels, kernel_size, stride, padding)
        self._init_parameters((out_channels, in_channels) + self.kernel_size, bias)

    def forward(self, x):
        return ops.conv2d(x, self.weight, self.bias, self.stride, self.padding)   # the op checks x


class ConvTranspose2d(_ConvNd):
    """Learnable upsampling: output size (H - 1) * stride - 2 * padding + kernel + output_padding
    (kernel 3, stride 2, padding 1, output_padding 1 doubles H)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0,
                 bias=True):
        self._check_arguments(in_channels, out_channels, kernel_size, stride, padding)
        self.output_padding = checks.pair("ConvTranspose2d", "output_padding", output_padding, minimum=0)
        if any(o >= s for o, s in zip(self.output_padding, self.stride)):
            raise ValueError(f"ConvTranspose2d: output_padding {self.output_padding} must be smaller "
                             f"than stride {self.stride}")
        self._init_parameters((in_channels, out_channels) + self.kernel_size, bias)

    def forward(self, x):   # the op checks x's shape
        return ops.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding,
                                    self.output_padding)


class _Pool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0):
        """stride defaults to the kernel size (non-overlapping windows)."""
        name = type(self).__name__
        checks.pair(name, "kernel_size", kernel_size, minimum=1)
        if stride is not None:
            checks.pair(name, "stride", stride, minimum=1)
        checks.pair(name, "padding", padding, minimum=0)
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def __repr__(self):
        return (f"{type(self).__name__}(kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding})")


class MaxPool2d(_Pool2d):
    def forward(self, x):
        return ops.max_pool2d(x, self.kernel_size, self.stride, self.padding)


class AvgPool2d(_Pool2d):
    def forward(self, x):
        return ops.avg_pool2d(x, self.kernel_size, self.stride, self.padding)
