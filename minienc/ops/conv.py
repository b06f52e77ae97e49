"""2-D convolution and transposed convolution as ONE matrix product each, through im2col.

im2col: every kh x kw window of the (padded) input becomes one column of a matrix, so a
convolution with weight (O, C, kh, kw) is weight (O, kh*kw*C) @ cols (kh*kw*C, Ho*Wo*N). The
windows are a strided VIEW of the input (`as_strided`, on NumPy and CuPy alike: no copy, no
Python loop); the single copy happens when that view is laid out as the matrix. col2im is the
adjoint: it adds every window back to where it came from, with kh*kw vectorised slice-adds
(overlapping windows add up).

The transposed convolution (the gradient of a convolution with respect to its input, used as a
learnable upsampler) is the same two steps the other way round: weight^T @ x -> columns -> col2im.

Layouts. The API is PyTorch's: input (N, C, H, W); Conv2d weight (O, C, kh, kw); ConvTranspose2d
weight (C_in, C_out, kh, kw). Internally the work is done in (C, H, W, N) order, batch innermost
(as cuda-convnet did): every copy and slice-add of im2col/col2im then moves contiguous runs of N
values, not runs of 3 (kw) or C, and the matmul's (O, Ho*Wo*N) result already is the output. It
is returned as an (N, C, H, W) view of that memory; every op accepts views, and the next
convolution reads it in (C, H, W, N) order again without a copy.
"""
from .. import checks
from ..backend import get_xp
from ..engine import Function


def to_chwn(x):
    """The (C, H, W, N) view of an (N, C, H, W) array (free: only the strides change)."""
    return x.transpose(1, 2, 3, 0)


def from_chwn(x):
    return x.transpose(3, 0, 1, 2)


def pad_hw(x, padding, value=0.0):
    """x (C, H, W, N) with `padding` = (ph, pw) rows/columns of `value` on every side, as a new
    contiguous (C, H, W, N) array."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    c, h, w, n = x.shape
    out = get_xp(x).full((c, h + 2 * ph, w + 2 * pw, n), value, dtype=x.dtype)
    out[:, ph:ph + h, pw:pw + w] = x
    return out


def out_size(size, kernel, stride, padding):
    return (size + 2 * padding - kernel) // stride + 1


def windows(x, kernel, stride):
    """The strided view (kh, kw, C, Ho, Wo, N) of the kernel windows of x (C, H, W, N), already
    padded: entry [i, j, c, y, x, n] = x[c, y*stride + i, x*stride + j, n]. No copy."""
    xp = get_xp(x)
    (kh, kw), (sh, sw) = kernel, stride
    c, h, w, n = x.shape
    ho, wo = out_size(h, kh, sh, 0), out_size(w, kw, sw, 0)
    sc, s_h, s_w, sn = x.strides
    return xp.lib.stride_tricks.as_strided(
        x, shape=(kh, kw, c, ho, wo, n), strides=(s_h, s_w, sc, s_h * sh, s_w * sw, sn))


def im2col(x, kernel, stride, padding, value=0.0):
    """The column matrix (kh*kw*C, Ho*Wo*N) of x (C, H, W, N): one column per output pixel."""
    win = windows(pad_hw(x, padding, value), kernel, stride)
    kh, kw, c, ho, wo, n = win.shape
    return win.reshape(kh * kw * c, ho * wo * n)


def col2im(cols, padded_hw, stride, padding):
    """Adjoint of `windows` + crop: cols (kh, kw, C, Ho, Wo, N) summed back into a
    (C, Hp, Wp, N) canvas with (Hp, Wp) = padded_hw, then the padding cut away."""
    xp = get_xp(cols)
    kh, kw, c, ho, wo, n = cols.shape
    (sh, sw), (ph, pw) = stride, padding
    hp, wp = padded_hw
    out = xp.zeros((c, hp, wp, n), dtype=cols.dtype)
    for i in range(kh):  # kh*kw vectorised adds; within one (i, j) no position repeats
        for j in range(kw):
            out[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw] += cols[i, j]
    return out[:, ph:hp - ph, pw:wp - pw] if ph or pw else out


def _check_input(name, x, weight, layout, layer):
    """The one check of a convolution's shapes, for nn.Conv2d / nn.ConvTranspose2d and direct
    callers alike: both 4-D, and the input's channels equal the weight's input-channel axis (0 or
    1); the error names the `layer` the weight would make."""
    if weight.ndim != 4:
        raise ValueError(f"{name}: weight must be 4-D ({layout}), got shape {tuple(weight.shape)}")
    sizes = dict(zip(layout.split(", "), weight.shape))
    if x.ndim != 4 or x.shape[1] != sizes["C_in"]:
        raise ValueError(f"{name}: input {tuple(x.shape)} (N, C, H, W) does not match weight "
                         f"{tuple(weight.shape)} ({layout}), as in {layer}({sizes['C_in']}, "
                         f"{sizes['C_out']}, kernel_size={tuple(weight.shape[2:])}), which takes "
                         f"inputs (N, {sizes['C_in']}, H, W)")


class Conv2dFunction(Function):
    name = "conv2d"

    def __init__(self, stride=1, padding=0):
        self.stride = checks.pair("conv2d", "stride", stride, minimum=1)
        self.padding = checks.pair("conv2d", "padding", padding, minimum=0)

    def forward(self, x, weight, bias=None):
        _check_input("conv2d", x, weight, "C_out, C_in, kh, kw", "Conv2d")
        n, c, h, w = x.shape
        o, _, kh, kw = weight.shape
        ho, wo = (out_size(h, kh, self.stride[0], self.padding[0]),
                  out_size(w, kw, self.stride[1], self.padding[1]))
        if ho < 1 or wo < 1:
            raise ValueError(f"conv2d: input {tuple(x.shape)} is smaller than kernel ({kh}, {kw}) "
                             f"with padding {self.padding}")
        self.x_hw, self.kernel_c, self.has_bias = (h, w), (kh, kw, c), bias is not None
        self.w2 = weight.transpose(0, 2, 3, 1).reshape(o, -1)  # (O, kh*kw*C), the columns' order
        self.cols = im2col(to_chwn(x), (kh, kw), self.stride, self.padding)
        out = self.w2 @ self.cols  # the one matmul: (O, kh*kw*C) @ (kh*kw*C, Ho*Wo*N)
        if bias is not None:
            out += bias[:, None]
        return from_chwn(out.reshape(o, ho, wo, n))

    def backward(self, g):
        n, o, ho, wo = g.shape
        g2 = to_chwn(g).reshape(o, -1)  # (O, Ho*Wo*N); free when g is laid out like our output
        gx = gw = None
        if self.needs_grad[0]:
            gcols = (self.w2.T @ g2).reshape(*self.kernel_c[:2], self.kernel_c[2], ho, wo, n)
            (ph, pw), (h, w) = self.padding, self.x_hw
            gx = from_chwn(col2im(gcols, (h + 2 * ph, w + 2 * pw), self.stride, self.padding))
        if self.needs_grad[1]:
            kh, kw, c = self.kernel_c
            gw = (g2 @ self.cols.T).reshape(o, kh, kw, c).transpose(0, 3, 1, 2)
        if not self.has_bias:
            return gx, gw
        return gx, gw, (g2.sum(axis=1) if self.needs_grad[2] else None)


class ConvTranspose2dFunction(Function):
    """The adjoint of Conv2d in x: out = col2im(weight^T @ x), of size
    (H - 1) * stride - 2 * padding + kh + output_padding (output_padding < stride picks one of
    the input sizes a strided convolution maps to the same output size)."""

    name = "conv_transpose2d"

    def __init__(self, stride=1, padding=0, output_padding=0):
        self.stride = checks.pair(self.name, "stride", stride, minimum=1)
        self.padding = checks.pair(self.name, "padding", padding, minimum=0)
        self.output_padding = checks.pair(self.name, "output_padding", output_padding, minimum=0)
        if any(op >= s for op, s in zip(self.output_padding, self.stride)):
            raise ValueError(f"conv_transpose2d: output_padding {self.output_padding} must be "
                             f"smaller than stride {self.stride}")

    def forward(self, x, weight, bias=None):
        _check_input("conv_transpose2d", x, weight, "C_in, C_out, kh, kw", "ConvTranspose2d")
        n, c, h, w = x.shape
        _, o, kh, kw = weight.shape
        (sh, sw), (ph, pw), (oh, ow) = self.stride, self.padding, self.output_padding
        # the uncropped canvas: every window of the equivalent convolution, plus output padding
        self.canvas = ((h - 1) * sh + kh + oh, (w - 1) * sw + kw + ow)
        ho, wo = self.canvas[0] - 2 * ph, self.canvas[1] - 2 * pw
        if ho < 1 or wo < 1:
            raise ValueError(f"conv_transpose2d: input {tuple(x.shape)} with padding {self.padding} "
                             f"gives an empty output")
        self.x2 = to_chwn(x).reshape(c, -1)  # (C_in, H*W*N), free when x is laid out (C, H, W, N)
        self.w2 = weight.transpose(0, 2, 3, 1).reshape(c, -1)  # (C_in, kh*kw*C_out)
        self.has_bias, self.out_hw, self.kernel = bias is not None, (ho, wo), (kh, kw)
        cols = (self.w2.T @ self.x2).reshape(kh, kw, o, h, w, n)  # the one matmul
        out = col2im(cols, self.canvas, self.stride, (0, 0))
        if bias is not None:
            out += bias[:, None, None, None]  # in place on our own canvas, before the crop
        return from_chwn(out[:, ph:ph + ho, pw:pw + wo])

    def backward(self, g):
        n, o, ho, wo = g.shape
        c = self.x2.shape[0]
        (ph, pw), (kh, kw) = self.padding, self.kernel
        canvas = get_xp(g).zeros((o,) + self.canvas + (n,), dtype=g.dtype)
        canvas[:, ph:ph + ho, pw:pw + wo] = to_chwn(g)
        win = windows(canvas, self.kernel, self.stride)  # (kh, kw, O, H, W, N): one per input pixel
        h, w = win.shape[3:5]
        gcols = win.reshape(kh * kw * o, h * w * n)
        gx = from_chwn((self.w2 @ gcols).reshape(c, h, w, n)) if self.needs_grad[0] else None
        gw = (self.x2 @ gcols.T).reshape(c, kh, kw, o).transpose(0, 3, 1, 2) \
            if self.needs_grad[1] else None
        if not self.has_bias:
            return gx, gw
        return gx, gw, (g.sum(axis=(0, 2, 3)) if self.needs_grad[2] else None)


def conv2d(x, weight, bias=None, stride=1, padding=0):
    fn = Conv2dFunction(stride, padding)
    return fn(x, weight) if bias is None else fn(x, weight, bias)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0):
    fn = ConvTranspose2dFunction(stride, padding, output_padding)
    return fn(x, weight) if bias is None else fn(x, weight, bias)
