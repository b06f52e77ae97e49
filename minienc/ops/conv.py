"""2-D convolution and transposed convolution as ONE matrix product each, through im2col.

im2col: every kh x kw window of the (padded) input becomes one row of a matrix, so a convolution
with weight (O, C, kh, kw) is cols (N*Ho*Wo, kh*kw*C) @ weight (kh*kw*C, O). The windows are a
strided VIEW of the input (`as_strided`, on NumPy and CuPy alike: no copy, no Python loop); the
single copy happens when that view is laid out as the matrix. col2im is the adjoint: it adds every
window back to where it came from, with kh*kw vectorised slice-adds (overlapping windows add up).

The transposed convolution (the gradient of a convolution with respect to its input, used as a
learnable upsampler) is the same two steps the other way round: x @ weight -> columns -> col2im.

Layouts. The API is PyTorch's: input (N, C, H, W); Conv2d weight (O, C, kh, kw); ConvTranspose2d
weight (C_in, C_out, kh, kw). Internally the work is done CHANNELS-LAST (N, H, W, C): a window's
(kw, C) entries are then contiguous, so the im2col copy and the col2im adds move long contiguous
runs instead of 3-element ones, and the matmul's (N*Ho*Wo, O) result already is the output. It is
returned as an (N, C, H, W) view of that channels-last memory; every op accepts views, and the
next convolution reads it channels-last again without a copy.
"""
from ..backend import get_xp
from ..tensor import Function


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def channels_last(x):
    """The (N, H, W, C) view of an (N, C, H, W) array (free: only the strides change)."""
    return x.transpose(0, 2, 3, 1)


def channels_first(x):
    return x.transpose(0, 3, 1, 2)


def pad_hw(x, padding, value=0.0):
    """x (N, H, W, C) with `padding` = (ph, pw) rows/columns of `value` on every side,
    as a new channels-last array."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    n, h, w, c = x.shape
    out = get_xp(x).full((n, h + 2 * ph, w + 2 * pw, c), value, dtype=x.dtype)
    out[:, ph:ph + h, pw:pw + w] = x
    return out


def out_size(size, kernel, stride, padding):
    return (size + 2 * padding - kernel) // stride + 1


def windows(x, kernel, stride):
    """The strided view (N, Ho, Wo, kh, kw, C) of every kernel window of x (N, H, W, C), already
    padded. No copy: window (i, j) starts at row i*stride, column j*stride."""
    xp = get_xp(x)
    (kh, kw), (sh, sw) = kernel, stride
    n, h, w, c = x.shape
    ho, wo = out_size(h, kh, sh, 0), out_size(w, kw, sw, 0)
    s0, s1, s2, s3 = x.strides
    return xp.lib.stride_tricks.as_strided(
        x, shape=(n, ho, wo, kh, kw, c), strides=(s0, s1 * sh, s2 * sw, s1, s2, s3))


def im2col(x, kernel, stride, padding, value=0.0):
    """The column matrix (N*Ho*Wo, kh*kw*C) of x (N, H, W, C): one row per output pixel."""
    win = windows(pad_hw(x, padding, value), kernel, stride)
    n, ho, wo, kh, kw, c = win.shape
    return win.reshape(n * ho * wo, kh * kw * c)


def col2im(cols, padded_hw, stride, padding):
    """Adjoint of `windows` + crop: cols (N, Ho, Wo, kh, kw, C) summed back into an
    (N, Hp, Wp, C) canvas with Hp, Wp = padded_hw, then the padding cut away."""
    xp = get_xp(cols)
    n, ho, wo, kh, kw, c = cols.shape
    (sh, sw), (ph, pw) = stride, padding
    hp, wp = padded_hw
    out = xp.zeros((n, hp, wp, c), dtype=cols.dtype)
    for i in range(kh):  # kh*kw vectorised adds; within one (i, j) no position repeats
        for j in range(kw):
            out[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw] += cols[:, :, :, i, j]
    return out[:, ph:hp - ph, pw:wp - pw] if ph or pw else out


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
        self.x_hw, self.kernel_c, self.has_bias = (h, w), (kh, kw, c), bias is not None
        self.w2 = weight.transpose(0, 2, 3, 1).reshape(o, -1)  # (O, kh*kw*C): the rows' order
        self.cols = im2col(channels_last(x), (kh, kw), self.stride, self.padding)
        out = self.cols @ self.w2.T  # the one matmul: (N*Ho*Wo, kh*kw*C) @ (kh*kw*C, O)
        if bias is not None:
            out += bias
        return channels_first(out.reshape(n, ho, wo, o))

    def backward(self, g):
        n, o, ho, wo = g.shape
        g2 = channels_last(g).reshape(-1, o)  # (N*Ho*Wo, O); free when g is channels-last
        gx = gw = None
        if self.needs_grad[0]:
            gcols = (g2 @ self.w2).reshape(n, ho, wo, *self.kernel_c)
            (ph, pw), (h, w) = self.padding, self.x_hw
            gx = channels_first(col2im(gcols, (h + 2 * ph, w + 2 * pw), self.stride, self.padding))
        if self.needs_grad[1]:
            kh, kw, c = self.kernel_c
            gw = (g2.T @ self.cols).reshape(o, kh, kw, c).transpose(0, 3, 1, 2)
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
        self.canvas = ((h - 1) * sh + kh + oh, (w - 1) * sw + kw + ow)
        ho, wo = self.canvas[0] - 2 * ph, self.canvas[1] - 2 * pw
        if ho < 1 or wo < 1:
            raise ValueError(f"conv_transpose2d: input {tuple(x.shape)} with padding {self.padding} "
                             f"gives an empty output")
        self.x2 = channels_last(x).reshape(-1, c)  # (N*H*W, C_in), free when x is channels-last
        self.w2 = weight.transpose(0, 2, 3, 1).reshape(c, -1)  # (C_in, kh*kw*C_out)
        self.has_bias, self.out_hw, self.kernel = bias is not None, (ho, wo), (kh, kw)
        cols = (self.x2 @ self.w2).reshape(n, h, w, kh, kw, o)
        out = col2im(cols, self.canvas, self.stride, (0, 0))[:, ph:ph + ho, pw:pw + wo]
        if bias is not None:
            out = out + bias
        return channels_first(out)

    def backward(self, g):
        n, o, ho, wo = g.shape
        c = self.x2.shape[1]
        (ph, pw), (kh, kw) = self.padding, self.kernel
        canvas = get_xp(g).zeros((n,) + self.canvas + (o,), dtype=g.dtype)
        canvas[:, ph:ph + ho, pw:pw + wo] = channels_last(g)
        win = windows(canvas, self.kernel, self.stride)  # (N, H, W, kh, kw, O): one per input pixel
        h, w = win.shape[1:3]
        gcols = win.reshape(n * h * w, kh * kw * o)
        gx = channels_first((gcols @ self.w2.T).reshape(n, h, w, c)) if self.needs_grad[0] else None
        gw = (self.x2.T @ gcols).reshape(c, kh, kw, o).transpose(0, 3, 1, 2) \
            if self.needs_grad[1] else None
        if not self.has_bias:
            return gx, gw
        return gx, gw, (g.sum(axis=(0, 2, 3)) if self.needs_grad[2] else None)


def conv2d(x, weight, bias=None, stride=1, padding=0):
    fn = Conv2d(stride, padding)
    return fn(x, weight) if bias is None else fn(x, weight, bias)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0):
    fn = ConvTranspose2d(stride, padding, output_padding)
    return fn(x, weight) if bias is None else fn(x, weight, bias)
