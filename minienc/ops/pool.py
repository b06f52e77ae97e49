"""Max and average pooling over 2-D windows, on the same strided window view as convolution.

Forward reduces each (kh, kw) window of `windows(x)` (no copy for average pooling); backward
spreads the gradient back over the windows with `col2im`, so overlapping windows (stride smaller
than the kernel) add up correctly. Max pooling routes each gradient to the first maximum of its
window (PyTorch's choice); padding counts as -inf for max and as 0 for average (PyTorch's default
count_include_pad=True).
"""
from ..backend import get_xp
from ..tensor import Function
from .conv import _pair, col2im, pad2d, windows


class _Pool2d(Function):
    def __init__(self, kernel_size, stride=None, padding=0):
        self.kernel = _pair(kernel_size)
        self.stride = _pair(stride) if stride is not None else self.kernel
        self.padding = _pair(padding)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel)):
            raise ValueError(f"{self.name}: padding {self.padding} must be at most half the kernel "
                             f"{self.kernel}")

    def _windows(self, x, pad_value):
        if x.ndim != 4:
            raise ValueError(f"{self.name}: expected input (N, C, H, W), got {tuple(x.shape)}")
        padded = pad2d(x, self.padding, pad_value)
        if padded.shape[2] < self.kernel[0] or padded.shape[3] < self.kernel[1]:
            raise ValueError(f"{self.name}: input {tuple(x.shape)} is smaller than the kernel {self.kernel}")
        self.padded_shape = padded.shape
        return windows(padded, self.kernel, self.stride)

    def _spread(self, gcols):
        return col2im(gcols, self.padded_shape, self.stride, self.padding)


class MaxPool2d(_Pool2d):
    name = "max_pool2d"

    def forward(self, x):
        win = self._windows(x, float("-inf"))
        flat = win.reshape(win.shape[:4] + (-1,))
        self.argmax = flat.argmax(axis=-1)
        return get_xp(x).take_along_axis(flat, self.argmax[..., None], axis=-1)[..., 0]

    def backward(self, g):
        xp = get_xp(g)
        kh, kw = self.kernel
        hit = self.argmax[..., None] == xp.arange(kh * kw)  # one-hot of the winner in each window
        gcols = (hit * g[..., None]).reshape(g.shape + (kh, kw))
        return self._spread(gcols)


class AvgPool2d(_Pool2d):
    name = "avg_pool2d"

    def forward(self, x):
        return self._windows(x, 0.0).mean(axis=(4, 5))

    def backward(self, g):
        kh, kw = self.kernel
        share = g * (1.0 / (kh * kw))
        return self._spread(get_xp(g).broadcast_to(share[..., None, None], g.shape + (kh, kw)))


def max_pool2d(x, kernel_size, stride=None, padding=0):
    return MaxPool2d(kernel_size, stride, padding)(x)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    return AvgPool2d(kernel_size, stride, padding)(x)
