"""DINO: self-distillation with no labels; a student matches a centred, sharpened EMA teacher.

Caron, Touvron, Misra, Jegou, Mairal, Bojanowski & Joulin 2021, "Emerging Properties in
Self-Supervised Vision Transformers" (ICCV); the released code is facebookresearch/dino
(main_dino.py: DINOLoss, DataAugmentationDINO, train_one_epoch; vision_transformer.py:
DINOHead; utils.py: cosine_scheduler).

Student g_s = head_s(f_s(x)) and teacher g_t, the teacher an exponential moving average of the
student; both end in K logits (one per "prototype"). Each image gives 2 global crops and V local
crops (minienc.data.MultiCrop); the teacher sees only the global ones, the student every crop.

    P_s(x) = softmax(g_s(x) / tau_s)                        tau_s = 0.1
    P_t(x) = softmax((g_t(x) - c) / tau_t)                  centring by c, sharpening by tau_t:
                                                            0.04 -> 0.07 linearly over the first
                                                            30 epochs, then 0.07 (the paper)
    L = 1/M sum_{g in global} sum_{v in crops, v != g} mean_b H(P_t(x_g), P_s(x_v))
        H(p, q) = -sum_k p_k log q_k,    M = number of (g, v) pairs = 2 (V + 1)
    c <- m c + (1 - m) mean over the batch and both global crops of g_t(x)   m = 0.9, AFTER the
                                                            loss (which uses the old centre)
    theta_t <- lambda theta_t + (1 - lambda) theta_s         lambda: 0.996 -> 1 along a cosine

The head is an MLP (3 layers, GELU, 2048 hidden, a 256-wide bottleneck), L2 normalisation, and a
weight-normalised Linear to K = 65536 without bias whose norm is fixed at 1 (norm_last_layer): its
rows are unit prototypes and the logits are cosines with them.

Two collapses threaten, and the two operations on the teacher pull against each other.
Sharpening alone (c = 0) lets one prototype dominate: every teacher output becomes the same
one-hot, its entropy falls to 0 (`DINO(..., centering=False)`, `demos/dino.py --no-center`).
Centring alone flattens the teacher towards the uniform distribution (entropy log K). Together
they keep the teacher's entropy in between; in both collapses the student matches the teacher
perfectly, so KL(P_t || P_s) = H(P_t, P_s) - H(P_t) falls to 0. `loss` returns the teacher's
entropy, this KL and the centre's norm, the paper's gauges (its figure 7).

`batch_center` is the one place the teacher's batch statistics are taken. Across processes
(minienc.distributed, `DINO(..., distributed=True)`) it is the mean over every process's batch:
the local sums all-reduced and divided by the global count, as the released code's update_center
(no gradient flows through c); batch norm in the heads is made global by nn.SyncBatchNorm.
"""
import math

from .. import backend, checks, ops
from .. import distributed as dist
from ..engine import as_array, as_tensor, no_grad
from ..nn import GELU, BatchNorm1d, Linear, Module, Sequential, init
from ..optim.ema import EMA
from ..optim.schedules import cosine
from .contrastive import check_head
from .protocol import ViewObjective, head_width


# ----- the head ---------------------------------------------------------------------------------

class WeightNormLinear(Module):
    """y = x @ W.T with W's rows of norm g: W = g * V / ||V|| row by row (Salimans & Kingma 2016,
    as torch.nn.utils.weight_norm on a Linear). fixed_norm=True (DINO's norm_last_layer): g = 1,
    not a parameter, so every row of W is a unit vector. No bias."""

    def __init__(self, in_features, out_features, fixed_norm=True):
        self.in_features = checks.positive_int("WeightNormLinear", "in_features", in_features)
        self.out_features = checks.positive_int("WeightNormLinear", "out_features", out_features)
        # V gets nn.Linear's default initialisation, as DINOHead's last layer
        self.weight_v = init.kaiming_uniform(init.empty((out_features, in_features)),
                                             a=math.sqrt(5.0))
        self.weight_g = None if fixed_norm else init.ones(init.empty((out_features, 1)))

    @property
    def weight(self):
        """W (out, in) as a Tensor of the parameters (differentiable)."""
        w = ops.normalize(self.weight_v, axis=1)
        return w if self.weight_g is None else w * self.weight_g

    def forward(self, x):
        if x.shape[-1] != self.in_features:
            raise ValueError(f"WeightNormLinear({self.in_features}, {self.out_features}): input has "
                             f"shape {x.shape}, expected (..., {self.in_features})")
        return x @ self.weight.T

    def __repr__(self):
        return (f"WeightNormLinear({self.in_features}, {self.out_features}, "
                f"fixed_norm={self.weight_g is None})")


class L2Normalize(Module):
    def forward(self, x):
        return ops.normalize(x, axis=-1)


def dino_head(in_features, out_features=65536, hidden_features=2048, bottleneck_features=256,
              num_layers=3, norm_last_layer=True, batch_norm=False):
    """DINOHead: Linear-GELU per hidden layer (num_layers - 1 of them; Linear-BN-GELU with
    batch_norm, the released --use_bn_in_head), a Linear to the bottleneck, L2 normalisation,
    then the weight-normalised prototypes (no bias). The MLP's Linears are re-initialised
    trunc_normal(0.02) with zero biases, as the released head."""
    check_head("dino_head", in_features, hidden_features, out_features, num_layers)
    checks.positive_int("dino_head", "bottleneck_features", bottleneck_features)
    layers, width = [], in_features
    for _ in range(num_layers - 1):
        norm = [BatchNorm1d(hidden_features)] if batch_norm else []
        layers += [Linear(width, hidden_features), *norm, GELU()]
        width = hidden_features
    layers.append(Linear(width, bottleneck_features))
    for layer in layers:
        if isinstance(layer, Linear):
            init.trunc_normal(layer.weight, std=0.02)
            init.zeros(layer.bias)
    return Sequential(*layers, L2Normalize(),
                      WeightNormLinear(bottleneck_features, out_features, fixed_norm=norm_last_layer))


# ----- the loss ---------------------------------------------------------------------------------

def teacher_distribution(teacher_logits, center, temperature):
    """P_t = softmax((g_t - c) / tau_t), a constant (no graph)."""
    if not temperature > 0:
        raise ValueError(f"DINO: the teacher temperature must be > 0, got {temperature}")
    checks.temperature("DINO", "teacher temperature", temperature)   # finite, not too small
    shifted = (as_array(teacher_logits) - as_array(center)) * (1.0 / temperature)
    with no_grad():
        return ops.softmax(as_tensor(shifted), axis=-1)


def dino_cross_entropy(teacher_probs, student_logits, student_temperature=0.1):
    """1/M sum over pairs (g, v), v != g, of mean_b H(P_t(x_g), softmax(g_s(x_v) / tau_s)).

    teacher_probs: one (B, K) batch per global crop; student_logits: one (B, K) batch per crop,
    the global crops first, in the same order."""
    if not student_temperature > 0:
        raise ValueError(f"DINO: the student temperature must be > 0, got {student_temperature}")
    checks.temperature("DINO", "student temperature", student_temperature)
    if len(student_logits) < 2 or len(teacher_probs) > len(student_logits):
        raise ValueError(f"DINO: {len(teacher_probs)} teacher views need at least as many student "
                         f"views, and at least two, got {len(student_logits)}")
    shapes = {tuple(t.shape) for t in (*teacher_probs, *student_logits)}
    if len(shapes) != 1 or len(shapes.pop()) != 2:
        raise ValueError(f"DINO: every view needs logits of one shape (B, K), got "
                         f"{[tuple(t.shape) for t in (*teacher_probs, *student_logits)]}")
    log_probs = [ops.log_softmax(s * (1.0 / student_temperature), axis=-1) for s in student_logits]
    total, pairs = 0.0, 0
    for g, p_t in enumerate(teacher_probs):
        for v, log_p_s in enumerate(log_probs):
            if v == g:
                continue   # a teacher view and the same view in the student: skipped
            total = total - (p_t * log_p_s).sum(axis=-1).mean()
            pairs += 1
    return total * (1.0 / pairs)


def batch_center(teacher_logits, distributed=False):
    """(1, K): the mean of the teacher's logits over the batch (all global crops together);
    distributed: over every process's batch."""
    logits = as_array(teacher_logits)
    return dist.batch_mean(logits) if distributed else logits.mean(axis=0, keepdims=True)


def entropy(probs):
    """mean_b -sum_k p_k log p_k of distributions (B, K), a device scalar (0 log 0 = 0)."""
    p = as_array(probs)
    xp = backend.get_xp(p)
    return -(p * xp.log(xp.maximum(p, 1e-30))).sum(axis=-1).mean()


# ----- the model --------------------------------------------------------------------------------

class DINO(ViewObjective):
    """Student (encoder + head), its EMA teacher, and the teacher's centre.

    dino = DINO(encoder, dino_head(64, 1024, 256, 64), augment=MultiCrop(2, 6), momentum=0.996)
    opt = LARS(dino.param_groups(1e-6), lr=1.0)      # the student only
    terms = dino.loss(images)          # loss, teacher_entropy, kl, center_norm; the centre moves
    dino.after_step(step / steps)      # the teacher follows, lambda on its cosine to 1

    `augment` turns a batch into its crops, the global ones first (minienc.data.MultiCrop).
    `teacher_temperature` is an attribute the loss reads: its warm-up is a Trainer schedule,
    schedules={"teacher_temperature": LinearSchedule(0.04, 0.07, warmup_steps)}. The centre
    moves in the loss, after it is used, as the released DINOLoss does (each micro-batch of an
    accumulated step moves it). The teacher (`teacher`) is a child module and the centre a
    buffer, so both are in state_dict and a checkpoint resumes them exactly; the teacher's
    parameters have requires_grad=False and are never in `param_groups`. `embed` is the
    TEACHER's encoder, the network DINO evaluates. centering=False keeps c = 0 (the collapse
    ablation). distributed=True: c moves by the mean over every process's batch
    (minienc.distributed); for batch norm in the heads, `nn.SyncBatchNorm.convert(dino)`.
    """

    def __init__(self, encoder, head, augment=None, student_temperature=0.1,
                 teacher_temperature=0.04, center_momentum=0.9, momentum=0.996, global_crops=2,
                 centering=True, distributed=False):
        checks.in_range("DINO", "momentum", momentum, 0.0, 1.0)
        checks.in_range("DINO", "center_momentum", center_momentum, 0.0, 1.0)
        checks.temperature("DINO", "student_temperature", student_temperature)
        checks.temperature("DINO", "teacher_temperature", teacher_temperature)
        checks.positive_int("DINO", "global_crops", global_crops)
        checks.callable_or_none("DINO", "augment", augment)
        self.student = Sequential(encoder, head)
        self._ema = EMA(self.student)    # a frozen deep copy: the teacher
        self.teacher = self._ema.target
        self.augment, self.momentum = augment, momentum
        self.student_temperature = float(student_temperature)
        self.teacher_temperature = float(teacher_temperature)
        self.center_momentum = float(center_momentum)
        self.global_crops, self.centering = int(global_crops), bool(centering)
        self.distributed = bool(distributed)
        out_features = head_width("DINO", head, "the prototypes, as dino_head(...) builds it")
        xp = backend.xp_for(encoder.device)
        self.register_buffer("center", xp.zeros((1, out_features), dtype=backend.DEFAULT_DTYPE))

    @property
    def encoder(self):
        return self.student[0]

    @property
    def teacher_encoder(self):
        return self.teacher[0]

    def embed(self, images):
        return self.teacher_encoder(images)

    def embed_module(self):
        return self.teacher_encoder

    def views(self, images):
        if self.augment is None:
            return super().views(images)   # says what is missing
        return list(self.augment(images))

    def loss_of_views(self, *crops):
        """The loss over multi-crop `crops` (the global crops first) and the gauges; then the
        centre moves (so the loss used the centre from before this batch)."""
        if len(crops) < max(2, self.global_crops):
            raise ValueError(f"DINO: needs the {self.global_crops} global crops and at least two "
                             f"crops in all, got {len(crops)}")
        b = crops[0].shape[0]
        with no_grad():
            teacher_logits = self.teacher(ops.concatenate(crops[:self.global_crops]))
        teacher_probs = teacher_distribution(teacher_logits, self.center, self.teacher_temperature)
        per_crop = [teacher_probs[i * b:(i + 1) * b] for i in range(self.global_crops)]
        loss = dino_cross_entropy(per_crop, self._student_logits(crops), self.student_temperature)
        teacher_entropy = entropy(teacher_probs)
        if self.centering:
            self._update_center(teacher_logits)
        xp = backend.get_xp(self.center)
        return {"loss": loss, "teacher_entropy": as_tensor(teacher_entropy),
                "kl": as_tensor(loss.data - teacher_entropy),
                "center_norm": as_tensor(xp.sqrt((self.center * self.center).sum()))}

    def after_step(self, progress):
        """theta_t <- lambda theta_t + (1 - lambda) theta_s, lambda from `momentum` to 1 along a
        cosine over the run (the released cosine_scheduler)."""
        self._ema.update(cosine(progress, self.momentum, 1.0, 1.0))

    def _student_logits(self, crops):
        """The student on every crop: crops of one resolution in one batch (so batch norm sees
        them together, as the released MultiCropWrapper), split back per crop."""
        logits, start = [], 0
        while start < len(crops):
            end = start
            while end < len(crops) and crops[end].shape == crops[start].shape:
                end += 1
            out = self.student(ops.concatenate(crops[start:end]))
            b = crops[start].shape[0]
            logits += [out[i * b:(i + 1) * b] for i in range(end - start)]
            start = end
        return logits

    def _update_center(self, teacher_logits):
        """c <- m c + (1 - m) batch_center(teacher logits), in place on the device."""
        m = self.center_momentum
        center = self.center    # the buffer's array, changed in place (`self.center *= m` would
        center *= m             # also bind an attribute that a later load_state_dict leaves stale)
        center += (1.0 - m) * batch_center(teacher_logits, self.distributed)


