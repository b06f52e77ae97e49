"""2-D convolution and transposed convolution as ONE matrix product each, through im2col.

im2col: every kh x kw window of the (padded) input becomes one row of a matrix, so a convolution
with weight (O, C, kh, kw) is cols (N*Ho*Wo, C*kh*kw) @ weight (C*kh*kw, O). The windows are a
strided VIEW of the input (`as_strided`, on NumPy and CuPy alike: no copy, no Python loop); the
single copy happens when that view is laid out as the matrix. col2im is the adjoint: it adds every
window back to where it came from, with kh*kw vectorised slice-adds (overlapping windows add up).

The transposed convolution (the gradient of a convolution with respect to its input, used as a
learnable upsampler) is the same two steps the other way round: x @ weight -> columns -> col2im.
Layouts are PyTorch's: input (N, C, H, W); Conv2d weight (O, C, kh, kw); ConvTranspose2d weight
(C_in, C_out, kh, kw). Outputs are computed channels-last (one matmul) and returned as an NCHW
view, which every later op accepts; nothing is copied just to reorder axes.
"""
from ..backend import get_xp
from ..tensor import Function


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def pad2d(x, padding, value=0.0):
    """x (N, C, H, W) with `padding` = (ph, pw) rows/columns of `value` added on every side."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    n, c, h, w = x.shape
    out = get_xp(x).full((n, c, h + 2 * ph, w + 2 * pw), value, dtype=x.dtype)
    out[:, :, ph:ph + h, pw:pw + w] = x
    return out


def out_size(size, kernel, stride, padding):
    return (size + 2 * padding - kernel) // stride + 1


def windows(x, kernel, stride):
    """The strided view (N, C, Ho, Wo, kh, kw) of every kernel window of x (already padded)."""
    xp = get_xp(x)
    (kh, kw), (sh, sw) = kernel, stride
    n, c, h, w = x.shape
    ho, wo = out_size(h, kh, sh, 0), out_size(w, kw, sw, 0)
    s0, s1, s2, s3 = x.strides
    return xp.lib.stride_tricks.as_strided(
        x, shape=(n, c, ho, wo, kh, kw), strides=(s0, s1, s2 * sh, s3 * sw, s2, s3))


def im2col(x, kernel, stride, padding):
    """The column matrix (N*Ho*Wo, C*kh*kw) of x (N, C, H, W): one row per output pixel."""
    win = windows(pad2d(x, padding), kernel, stride)
    n, c, ho, wo, kh, kw = win.shape
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * kh * kw)


def col2im(cols, padded_shape, stride, padding):
    """Adjoint of `windows` + crop: cols (N, C, Ho, Wo, kh, kw), in any memory layout, summed
    back into an array of `padded_shape` (N, C, Hp, Wp), then the padding cut away."""
    xp = get_xp(cols)
    n, c, ho, wo, kh, kw = cols.shape
    (sh, sw), (ph, pw) = stride, padding
    out = xp.zeros(padded_shape, dtype=cols.dtype)
    for i in range(kh):  # kh*kw vectorised adds; within one (i, j) no position repeats
        for j in range(kw):
            out[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw] += cols[:, :, :, :, i, j]
    hp, wp = padded_shape[2:]
    return out[:, :, ph:hp - ph, pw:wp - pw] if ph or pw else out


def _check_rank(name, x, weight):
    if x.ndim != 4 or weight.ndim != 4:
        raise ValueError(f"{name}: expected input (N, C, H, W) and a 4-D weight, got input "
                         f"{tuple(x.shape)} and weight {tuple(weight.shape)}")


class Conv2d(Function):
    def __init__(self, stride=1, padding=0):
        self.stride, self.padding = _pair(stride), _pair(padding)

    def forward(self, x, weight, bias=None):
        _check_rank("conv2d", x, weight)
        n, c, h, w = x.shape
        o, c_w, kh, kw = weight.shape
        if c != c_w:
            raise ValueError(f"conv2d: input {tuple(x.shape)} has {c} channels but weight "
                             f"{tuple(weight.shape)} expects {c_w}")
        ho, wo = (out_size(h, kh, self.stride[0], self.padding[0]),
                  out_size(w, kw, self.stride[1], self.padding[1]))
        if ho < 1 or wo < 1:
            raise ValueError(f"conv2d: input {tuple(x.shape)} is smaller than kernel ({kh}, {kw}) "
                             f"with padding {self.padding}")
        self.x_shape, self.weight, self.has_bias = x.shape, weight, bias is not None
        self.cols = im2col(x, (kh, kw), self.stride, self.padding)
        out = self.cols @ weight.reshape(o, -1).T  # the one matmul: (N*Ho*Wo, C*kh*kw) @ (C*kh*kw, O)
        if bias is not None:
            out += bias
        return out.reshape(n, ho, wo, o).transpose(0, 3, 1, 2)

    def backward(self, g):
        n, o, ho, wo = g.shape
        w = self.weight
        g2 = g.transpose(0, 2, 3, 1).reshape(-1, o)  # (N*Ho*Wo, O), free if g is channels-last
        gx = gw = None
        if self.needs_grad[0]:
            c, kh, kw = w.shape[1:]
            gcols = (g2 @ w.reshape(o, -1)).reshape(n, ho, wo, c, kh, kw).transpose(0, 3, 1, 2, 4, 5)
            ph, pw = self.padding
            padded = self.x_shape[:2] + (self.x_shape[2] + 2 * ph, self.x_shape[3] + 2 * pw)
            gx = col2im(gcols, padded, self.stride, self.padding)
        if self.needs_grad[1]:
            gw = (g2.T @ self.cols).reshape(w.shape)
        if not self.has_bias:
            return gx, gw
        return gx, gw, (g2.sum(axis=0) if self.needs_grad[2] else None)


class ConvTranspose2d(Function):
    """The adjoint of Conv2d in x: out = col2im(x @ weight), of size
    (H - 1) * stride - 2 * padding + kh + output_padding (output_padding < stride picks one of
    the input sizes a strided convolution maps to the same output size)."""

    def __init__(self, stride=1, padding=0, output_padding=0):
        self.stride, self.padding = _pair(stride), _pair(padding)
        self.output_padding = _pair(output_padding)
        if any(op >= s for op, s in zip(self.output_padding, self.stride)):
            raise ValueError(f"conv_transpose2d: output_padding {self.output_padding} must be "
                             f"smaller than stride {self.stride}")

    def forward(self, x, weight, bias=None):
        _check_rank("conv_transpose2d", x, weight)
        n, c, h, w = x.shape
        c_w, o, kh, kw = weight.shape
        if c != c_w:
            raise ValueError(f"conv_transpose2d: input {tuple(x.shape)} has {c} channels but weight "
                             f"{tuple(weight.shape)} (C_in, C_out, kh, kw) expects {c_w}")
        (sh, sw), (ph, pw), (oh, ow) = self.stride, self.padding, self.output_padding
        # the uncropped canvas: every window of the equivalent convolution, plus output padding
        self.canvas = (n, o, (h - 1) * sh + kh + oh, (w - 1) * sw + kw + ow)
        ho, wo = self.canvas[2] - 2 * ph, self.canvas[3] - 2 * pw
        if ho < 1 or wo < 1:
            raise ValueError(f"conv_transpose2d: input {tuple(x.shape)} with padding {self.padding} "
                             f"gives an empty output")
        self.x2 = x.transpose(0, 2, 3, 1).reshape(-1, c)
        self.weight, self.has_bias, self.out_hw = weight, bias is not None, (ho, wo)
        cols = (self.x2 @ weight.reshape(c, -1)).reshape(n, h, w, o, kh, kw)
        out = col2im(cols.transpose(0, 3, 1, 2, 4, 5), self.canvas, self.stride, (0, 0))
        out = out[:, :, ph:ph + ho, pw:pw + wo]
        if bias is not None:
            out = out + bias.reshape(1, o, 1, 1)
        return out

    def backward(self, g):
        w = self.weight
        c, o, kh, kw = w.shape
        (ph, pw), (ho, wo) = self.padding, self.out_hw
        canvas = get_xp(g).zeros(self.canvas, dtype=g.dtype)
        canvas[:, :, ph:ph + ho, pw:pw + wo] = g
        win = windows(canvas, (kh, kw), self.stride)  # (N, O, H, W, kh, kw): one window per input pixel
        n, _, h, wd = win.shape[:4]
        gcols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * h * wd, o * kh * kw)
        gx = (gcols @ w.reshape(c, -1).T).reshape(n, h, wd, c).transpose(0, 3, 1, 2) \
            if self.needs_grad[0] else None
        gw = (self.x2.T @ gcols).reshape(w.shape) if self.needs_grad[1] else None
        if not self.has_bias:
            return gx, gw
        return gx, gw, (g.sum(axis=(0, 2, 3)) if self.needs_grad[2] else None)


def conv2d(x, weight, bias=None, stride=1, padding=0):
    fn = Conv2d(stride, padding)
    return fn(x, weight) if bias is None else fn(x, weight, bias)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0):
    fn = ConvTranspose2d(stride, padding, output_padding)
    return fn(x, weight) if bias is None else fn(x, weight, bias)
