"""Max and average pooling over 2-D windows, on the same strided window view as convolution.

Forward reduces each (kh, kw) window of `windows(x)` (in (C, H, W, N) order, as convolution; no copy
for average pooling); backward spreads the gradient back over the windows with `col2im`, so
overlapping windows (stride smaller than the kernel) add up correctly. Max pooling routes each gradient to the first maximum of its
window (PyTorch's choice); padding counts as -inf for max and as 0 for average (PyTorch's default
count_include_pad=True).
"""
from .. import checks
from ..backend import get_xp
from ..engine import Function
from .conv import col2im, from_chwn, pad_hw, to_chwn, windows


class _Pool2dFunction(Function):
    def __init__(self, kernel_size, stride=None, padding=0):
        self.kernel = checks.pair(self.name, "kernel_size", kernel_size, minimum=1)
        self.stride = self.kernel if stride is None else checks.pair(self.name, "stride", stride, minimum=1)
        self.padding = checks.pair(self.name, "padding", padding, minimum=0)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel)):
            raise ValueError(f"{self.name}: padding {self.padding} must be at most half the kernel "
                             f"{self.kernel}")

    def _windows(self, x, pad_value):
        if x.ndim != 4:
            raise ValueError(f"{self.name}: expected input (N, C, H, W), got {tuple(x.shape)}")
        padded = pad_hw(to_chwn(x), self.padding, pad_value)
        if padded.shape[1] < self.kernel[0] or padded.shape[2] < self.kernel[1]:
            raise ValueError(f"{self.name}: input {tuple(x.shape)} is smaller than the kernel {self.kernel}")
        self.padded_hw = padded.shape[1:3]
        return windows(padded, self.kernel, self.stride)  # (kh, kw, C, Ho, Wo, N)

    def _spread(self, gcols):
        """(kh, kw, C, Ho, Wo, N) window gradients -> the input's gradient (N, C, H, W)."""
        return from_chwn(col2im(gcols, self.padded_hw, self.stride, self.padding))


class MaxPool2dFunction(_Pool2dFunction):
    name = "max_pool2d"

    def forward(self, x):
        win = self._windows(x, float("-inf"))
        flat = win.reshape((-1,) + win.shape[2:])  # (kh*kw, C, Ho, Wo, N)
        self.argmax = flat.argmax(axis=0)  # (C, Ho, Wo, N): the first maximum of each window
        return from_chwn(get_xp(x).take_along_axis(flat, self.argmax[None], axis=0)[0])

    def backward(self, g):
        xp = get_xp(g)
        kh, kw = self.kernel
        taps = xp.arange(kh * kw).reshape(-1, 1, 1, 1, 1)
        gcols = (taps == self.argmax) * to_chwn(g)  # the gradient goes to each window's winner
        return self._spread(gcols.reshape((kh, kw) + gcols.shape[1:]))


class AvgPool2dFunction(_Pool2dFunction):
    name = "avg_pool2d"

    def forward(self, x):
        return from_chwn(self._windows(x, 0.0).mean(axis=(0, 1)))

    def backward(self, g):
        kh, kw = self.kernel
        share = to_chwn(g) * (1.0 / (kh * kw))  # (C, Ho, Wo, N), the same for every tap
        return self._spread(get_xp(g).broadcast_to(share, (kh, kw) + share.shape))


def max_pool2d(x, kernel_size, stride=None, padding=0):
    return MaxPool2dFunction(kernel_size, stride, padding)(x)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    return AvgPool2dFunction(kernel_size, stride, padding)(x)
