"""Fused CuPy kernels: GELU, layer norm and softmax cross-entropy, and the optimizer updates.

Why: on a GPU, a small model's step is bound by kernel launches and memory passes, not by
arithmetic. The NumPy-style code in ops/ and optim/ launches one kernel per operator (GELU's
forward is eight, layer norm's backward a dozen, an Adam update a dozen per parameter); each
function here does the same arithmetic, in the same order as the reference's formula, in one
pass. The classes at the end subclass the reference ops and are what `kernels.variant` hands out
for CuPy arrays; tests/test_kernels.py checks both paths against each other on the GPU. CuPy is
reached through the backend; kernels compile on first use and are cached by CuPy.

UNVERIFIED ON HARDWARE as written: no GPU was available when this file was written; run
.ci/gpu_check.sh on a GPU machine (it runs tests/test_kernels.py) before trusting it.
"""
from .. import backend
from ..ops import elementwise, losses, norm
from ..optim import adam, ema, sgd

_compiled = {}


# ----- GELU (tanh form; the formulas are in ops/elementwise.py) -------------------------------
_GELU_C, _GELU_K = elementwise.GELU_C, elementwise.GELU_K

_ELEMENTWISE = {
    "gelu_forward": ("T x", "T t, T y", f"""
        t = tanh(x * ((T){_GELU_C} + (T){_GELU_C * _GELU_K} * x * x));
        y = (T)0.5 * x * ((T)1 + t);
        """),
    "gelu_backward": ("T g, T x, T t", "T dx", f"""
        T slope = (T){_GELU_C} + (T){3.0 * _GELU_C * _GELU_K} * x * x;
        dx = g * (T)0.5 * ((T)1 + t + x * ((T)1 - t * t) * slope);
        """),
    # softmax cross-entropy backward: (softmax - onehot(target)) * row_scale, one pass
    "cross_entropy_backward": ("raw T p, raw I target, raw T row_scale, int64 classes", "T dx", """
        long long row = i / classes, col = i % classes;
        T onehot = (col == (long long)target[row]) ? (T)1 : (T)0;
        dx = (p[i] - onehot) * row_scale[row];
        """),
    # the updates of optim/adam.py, sgd.py and ema.py: in g and host scalars, in-out the state
    # (each element read, then written, independently)
    "adam": ("T g, T l2, T decay, T beta1, T beta2, T step_size, T eps_root", "T p, T m, T v", """
        T grad = g + l2 * p;              // Adam: L2 penalty through the moments (0 for AdamW)
        p = p * decay;                    // AdamW: decoupled decay, 1 - lr * wd (1 for Adam)
        m = beta1 * m + (1 - beta1) * grad;
        v = beta2 * v + (1 - beta2) * grad * grad;
        p = p - step_size * m / (sqrt(v) + eps_root);
        """),
    "sgd_momentum": ("T g, T lr, T wd, T momentum, T nesterov", "T p, T buf", """
        T d = g + wd * p;
        buf = momentum * buf + d;
        p = p - lr * (nesterov != 0 ? d + momentum * buf : buf);
        """),
    "ema": ("T online, T m", "T target", """
        target = m * target + (1 - m) * online;
        """),
}


def _elementwise(name):
    """The ElementwiseKernel `name` of _ELEMENTWISE, compiled once per process."""
    k = _compiled.get(name)
    if k is None:
        inputs, outputs, body = _ELEMENTWISE[name]
        k = _compiled[name] = backend.cupy().ElementwiseKernel(inputs, outputs, body,
                                                               f"minienc_{name}")
    return k


def gelu_forward(x):
    """(t, y): t = tanh(c (x + k x^3)) (kept for backward) and y = gelu(x), in one kernel."""
    return _elementwise("gelu_forward")(x)


def gelu_backward(g, x, t):
    return _elementwise("gelu_backward")(g, x, t)


# ----- row kernels: one thread block per row of the last axis ---------------------------------
# Each block reduces its row in shared memory (tree reduction over THREADS partial sums), so a
# row of any length is one block; the two-pass mean/variance matches the NumPy reference.
THREADS = 256

_ROW_SOURCE = f"#define THREADS {THREADS}\n" + r"""
template <typename T>
__device__ T block_sum(T value, T* shared) {
    shared[threadIdx.x] = value;
    __syncthreads();
    for (int half = THREADS / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) shared[threadIdx.x] += shared[threadIdx.x + half];
        __syncthreads();
    }
    T total = shared[0];
    __syncthreads();                        // shared[] is reused by the next reduction
    return total;
}

template <typename T>
__device__ T block_max(T value, T* shared) {
    shared[threadIdx.x] = value;
    __syncthreads();
    for (int half = THREADS / 2; half > 0; half /= 2) {
        if (threadIdx.x < half && shared[threadIdx.x + half] > shared[threadIdx.x])
            shared[threadIdx.x] = shared[threadIdx.x + half];
        __syncthreads();
    }
    T top = shared[0];
    __syncthreads();
    return top;
}

// y = xhat * w + b (or xhat when affine == 0), xhat = (x - mean) * rstd, per row of length d
template <typename T>
__global__ void layer_norm_forward(const T* x, const T* w, const T* b, T* y, T* xhat, T* rstd,
                                   long long d, T eps, int affine) {
    __shared__ T shared[THREADS];
    const long long row = blockIdx.x;
    const T* xr = x + row * d;
    T acc = 0;
    for (long long j = threadIdx.x; j < d; j += THREADS) acc += xr[j];
    const T mean = block_sum(acc, shared) / (T)d;
    acc = 0;
    for (long long j = threadIdx.x; j < d; j += THREADS) { T c = xr[j] - mean; acc += c * c; }
    const T r = (T)1 / sqrt(block_sum(acc, shared) / (T)d + eps);
    if (threadIdx.x == 0) rstd[row] = r;
    for (long long j = threadIdx.x; j < d; j += THREADS) {
        T h = (xr[j] - mean) * r;
        xhat[row * d + j] = h;
        y[row * d + j] = affine ? h * w[j] + b[j] : h;
    }
}

// dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = g * w
template <typename T>
__global__ void layer_norm_backward(const T* g, const T* w, const T* xhat, const T* rstd, T* dx,
                                    long long d, int affine) {
    __shared__ T shared[THREADS];
    const long long row = blockIdx.x, base = row * d;
    T s1 = 0, s2 = 0;
    for (long long j = threadIdx.x; j < d; j += THREADS) {
        T gh = affine ? g[base + j] * w[j] : g[base + j];
        s1 += gh;
        s2 += gh * xhat[base + j];
    }
    const T m1 = block_sum(s1, shared) / (T)d;
    const T m2 = block_sum(s2, shared) / (T)d;
    const T r = rstd[row];
    for (long long j = threadIdx.x; j < d; j += THREADS) {
        T gh = affine ? g[base + j] * w[j] : g[base + j];
        dx[base + j] = r * (gh - m1 - xhat[base + j] * m2);
    }
}

// per row: p = softmax(logits), loss = log(sum e^(x - max)) - (x[target] - max) (0 if ignored)
template <typename T, typename I>
__global__ void softmax_cross_entropy(const T* logits, const I* target, T* p, T* loss,
                                      long long classes, long long ignore, int has_ignore) {
    __shared__ T shared[THREADS];
    const long long row = blockIdx.x, base = row * classes;
    T top = logits[base];
    for (long long j = threadIdx.x; j < classes; j += THREADS)
        if (logits[base + j] > top) top = logits[base + j];
    top = block_max(top, shared);
    T acc = 0;
    for (long long j = threadIdx.x; j < classes; j += THREADS) {
        T e = exp(logits[base + j] - top);
        p[base + j] = e;
        acc += e;
    }
    const T total = block_sum(acc, shared);
    for (long long j = threadIdx.x; j < classes; j += THREADS) p[base + j] /= total;
    if (threadIdx.x == 0) {               // an out-of-range target gives NaN, not a host sync
        long long t = (long long)target[row];
        bool skip = has_ignore && t == ignore, bad = !skip && (t < 0 || t >= classes);
        T nan = (T)__int_as_float(0x7fc00000);   // no NAN macro without headers (NVRTC)
        loss[row] = skip ? (T)0 : bad ? nan : log(total) - (logits[base + t] - top);
    }
}
"""

_TEMPLATES = {"layer_norm_forward": ["float", "double"], "layer_norm_backward": ["float", "double"],
              "softmax_cross_entropy": ["float, long long", "double, long long",
                                        "float, int", "double, int"]}
_C_TYPES = {"float32": "float", "float64": "double", "int64": "long long", "int32": "int"}


def _row_kernel(name, *dtypes):
    """The instantiation of template `name` for these dtypes (compiled once per process)."""
    module = _compiled.get("rows")
    if module is None:
        expressions = [f"{n}<{args}>" for n, types in _TEMPLATES.items() for args in types]
        module = _compiled["rows"] = backend.cupy().RawModule(code=_ROW_SOURCE, options=("-std=c++14",),
                                                              name_expressions=expressions)
    args = ", ".join(_C_TYPES[str(d)] for d in dtypes)
    return module.get_function(f"{name}<{args}>")


def _launch(kernel, rows, args):
    if rows:
        kernel((rows,), (THREADS,), args)


def layer_norm_forward(x, weight, bias, eps):
    """(y, xhat, rstd) for x (..., d), normalised over the last axis; rstd has shape (..., 1)."""
    xp = backend.cupy()
    x = xp.ascontiguousarray(x)
    d = x.shape[-1]
    rows = x.size // d if d else 0
    y, xhat = xp.empty_like(x), xp.empty_like(x)
    rstd = xp.empty(x.shape[:-1] + (1,), dtype=x.dtype)
    affine = weight is not None
    w = xp.ascontiguousarray(weight) if affine else x   # unread when affine is 0
    b = xp.ascontiguousarray(bias) if affine else x
    _launch(_row_kernel("layer_norm_forward", x.dtype), rows,
            (x, w, b, y, xhat, rstd, xp.int64(d), x.dtype.type(eps), xp.int32(affine)))
    return y, xhat, rstd


def layer_norm_backward(g, weight, xhat, rstd):
    """dx for the layer norm whose forward saved (xhat, rstd)."""
    xp = backend.cupy()
    g = xp.ascontiguousarray(g)
    d = g.shape[-1]
    rows = g.size // d if d else 0
    dx = xp.empty_like(g)
    affine = weight is not None
    w = xp.ascontiguousarray(weight) if affine else g
    _launch(_row_kernel("layer_norm_backward", g.dtype), rows,
            (g, w, xhat, rstd, dx, xp.int64(d), xp.int32(affine)))
    return dx


def softmax_cross_entropy(logits, targets, ignore_index=None):
    """(softmax, loss per row) for logits (..., C) and integer targets (...); rows whose target
    is ignore_index get loss 0. Targets are not range-checked here (a host check would sync)."""
    xp = backend.cupy()
    logits = xp.ascontiguousarray(logits)
    targets = xp.ascontiguousarray(targets)
    if targets.dtype not in (xp.int64, xp.int32):
        targets = targets.astype(xp.int64)
    classes = logits.shape[-1]
    rows = logits.size // classes if classes else 0
    p = xp.empty_like(logits)
    loss = xp.empty(logits.shape[:-1], dtype=logits.dtype)
    ignore = -1 if ignore_index is None else int(ignore_index)
    _launch(_row_kernel("softmax_cross_entropy", logits.dtype, targets.dtype), rows,
            (logits, targets, p, loss, xp.int64(classes), xp.int64(ignore),
             xp.int32(ignore_index is not None)))
    return p, loss


def cross_entropy_backward(p, targets, row_scale):
    """(p - onehot(targets)) * row_scale[..., None]: the logits' gradient in one pass."""
    return _elementwise("cross_entropy_backward")(p, targets, row_scale, p.shape[-1],
                                                    size=p.size).reshape(p.shape)


# ----- the variants: the reference ops with these kernels inside ------------------------------
class GELUFunction(elementwise.GELUFunction):
    def forward(self, x):
        self.x = x
        self.t, out = gelu_forward(x)
        return out

    def backward(self, g):
        return gelu_backward(g, self.x, self.t)


class LayerNormFunction(norm.LayerNormFunction):
    """Statistics, xhat and the affine map in one kernel; dx in one more."""

    def forward(self, x, weight=None, bias=None):
        norm.check_layer_norm(x, weight, bias)
        self.weight = weight
        y, self.xhat, self.rstd = layer_norm_forward(x, weight, bias, self.eps)
        return y

    def backward(self, g):
        gx = layer_norm_backward(g, self.weight, self.xhat, self.rstd) if self.needs_grad[0] else None
        if self.weight is None:
            return gx
        g2, xhat2 = g.reshape(-1, g.shape[-1]), self.xhat.reshape(-1, g.shape[-1])
        gw = (g2 * xhat2).sum(axis=0) if self.needs_grad[1] else None
        return gx, gw, (g2.sum(axis=0) if self.needs_grad[2] else None)


class CrossEntropy(losses.CrossEntropy):
    """Softmax and per-row loss in one kernel (ignored rows give 0); the gradient in one more."""

    def forward(self, logits, targets):
        _, self.valid = self._checked_targets(logits, targets)
        self.softmax, loss = softmax_cross_entropy(logits, targets, self.ignore_index)
        self.targets = targets
        return self._reduce(loss)

    def backward(self, g):
        xp = backend.cupy()
        row_scale = xp.ascontiguousarray(self._row_scale(g), dtype=g.dtype)
        return cross_entropy_backward(self.softmax, self.targets, row_scale), None


def adam_update(w, g, m, v, b1, b2, step_size, eps, l2, decay):
    _elementwise("adam")(g, l2, decay, b1, b2, step_size, eps, w, m, v)


def sgd_update(w, g, buf, lr, weight_decay, momentum, nesterov):
    if buf is None:       # plain SGD is one kernel already
        return sgd.sgd_update(w, g, buf, lr, weight_decay, momentum, nesterov)
    _elementwise("sgd_momentum")(g, lr, weight_decay, momentum, float(nesterov), w, buf)


def ema_step(target, online, momentum):
    _elementwise("ema")(online, momentum, target)


VARIANTS = {elementwise.GELUFunction: GELUFunction, norm.LayerNormFunction: LayerNormFunction,
            losses.CrossEntropy: CrossEntropy, adam.adam_update: adam_update, sgd.sgd_update: sgd_update, ema.ema_step: ema_step}
