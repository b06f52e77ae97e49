"""Max and average pooling over 2-D windows, on the same strided window view as convolution.

Forward reduces each (kh, kw) window of `windows(x)` (channels-last, as convolution; no copy for
average pooling); backward spreads the gradient back over the windows with `col2im`, so
overlapping windows (stride smaller than the kernel) add up correctly. Max pooling routes each gradient to the first maximum of its
window (PyTorch's choice); padding counts as -inf for max and as 0 for average (PyTorch's default
count_include_pad=True).
"""
from ..backend import get_xp
from ..tensor import Function
from .conv import _pair, channels_first, channels_last, col2im, pad_hw, windows


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
        padded = pad_hw(channels_last(x), self.padding, pad_value)
        if padded.shape[1] < self.kernel[0] or padded.shape[2] < self.kernel[1]:
            raise ValueError(f"{self.name}: input {tuple(x.shape)} is smaller than the kernel {self.kernel}")
        self.padded_hw = padded.shape[1:3]
        return windows(padded, self.kernel, self.stride)  # (N, Ho, Wo, kh, kw, C)

    def _spread(self, gcols):
        """(N, Ho, Wo, kh, kw, C) window gradients -> the input's gradient (N, C, H, W)."""
        return channels_first(col2im(gcols, self.padded_hw, self.stride, self.padding))


class MaxPool2d(_Pool2d):
    name = "max_pool2d"

    def forward(self, x):
        win = self._windows(x, float("-inf"))
        n, ho, wo, kh, kw, c = win.shape
        flat = win.transpose(0, 1, 2, 5, 3, 4).reshape(n, ho, wo, c, kh * kw)
        self.argmax = flat.argmax(axis=-1)  # (N, Ho, Wo, C): the first maximum of each window
        out = get_xp(x).take_along_axis(flat, self.argmax[..., None], axis=-1)[..., 0]
        return channels_first(out)

    def backward(self, g):
        xp = get_xp(g)
        kh, kw = self.kernel
        hit = self.argmax[..., None] == xp.arange(kh * kw)  # one-hot of the winner in each window
        gcols = hit * channels_last(g)[..., None]  # (N, Ho, Wo, C, kh*kw)
        n, ho, wo, c = g.shape[0], g.shape[2], g.shape[3], g.shape[1]
        return self._spread(gcols.reshape(n, ho, wo, c, kh, kw).transpose(0, 1, 2, 4, 5, 3))


class AvgPool2d(_Pool2d):
    name = "avg_pool2d"

    def forward(self, x):
        return channels_first(self._windows(x, 0.0).mean(axis=(3, 4)))

    def backward(self, g):
        kh, kw = self.kernel
        share = channels_last(g) * (1.0 / (kh * kw))  # (N, Ho, Wo, C)
        n, ho, wo, c = share.shape
        return self._spread(get_xp(g).broadcast_to(share[:, :, :, None, None], (n, ho, wo, kh, kw, c)))


def max_pool2d(x, kernel_size, stride=None, padding=0):
    return MaxPool2d(kernel_size, stride, padding)(x)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    return AvgPool2d(kernel_size, stride, padding)(x)
