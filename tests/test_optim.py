"""Optimizers against their update rules written out in NumPy, step by step; param groups; state
saving and moving; schedules at their key points; EMA; gradient clipping."""
import math

import numpy as np
import pytest

import minienc
from minienc.nn import Module, Parameter
from minienc.optim import (EMA, LARS, SGD, Adam, AdamW, Constant, Cosine, LinearSchedule,
                           WarmupCosine, clip_grad_norm, ema_update, param_groups_without_decay,
                           set_hyperparameter)

W0 = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]])
B0 = np.array([0.1, -0.2, 0.3])
GRADS = [np.array([[0.3, -0.1, 0.2], [-0.5, 0.4, 0.05]]),
         np.array([[-0.2, 0.3, 0.1], [0.6, -0.3, 0.2]]),
         np.array([[0.1, 0.1, -0.4], [0.2, 0.5, -0.1]])]


def run(opt_factory, device, grads=GRADS, init=W0):
    """Apply `grads` one step each to a parameter starting at `init`; returns host float64."""
    p = Parameter(init, device=device)
    opt = opt_factory([p])
    seen = []
    for g in grads:
        p.grad = minienc.tensor(g, device=device).data
        opt.step()
        assert p.dtype == np.float32 and p.device == device
        seen.append(p.numpy().astype(np.float64))
    return seen


def close(got, want):
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


# ----- closed-form updates --------------------------------------------------------------------
@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.9, False, 0.0),
                                                  (0.9, True, 0.0), (0.9, False, 0.1)])
def test_sgd_matches_formula(device, momentum, nesterov, wd):
    got = run(lambda ps: SGD(ps, lr=0.1, momentum=momentum, nesterov=nesterov, weight_decay=wd),
              device)
    w, b = W0.copy(), np.zeros_like(W0)
    for g, seen in zip(GRADS, got):
        g = g + wd * w
        b = momentum * b + g
        d = g + momentum * b if nesterov else (b if momentum else g)
        w = w - 0.1 * d
        close(seen, w)


@pytest.mark.parametrize("cls,wd", [(Adam, 0.0), (Adam, 0.1), (AdamW, 0.1)])
def test_adam_and_adamw_match_formula(device, cls, wd):
    lr, b1, b2, eps = 0.01, 0.9, 0.99, 1e-8
    got = run(lambda ps: cls(ps, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd), device)
    w, m, v = W0.copy(), np.zeros_like(W0), np.zeros_like(W0)
    for t, (g, seen) in enumerate(zip(GRADS, got), start=1):
        if cls is AdamW:
            w = w * (1 - lr * wd)     # decoupled: shrink the weights, leave the gradient alone
        else:
            g = g + wd * w            # L2: decay goes through the moments
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        w = w - lr * m_hat / (np.sqrt(v_hat) + eps)
        close(seen, w)


def test_adam_first_step_moves_every_weight_by_lr(device):
    # with zero moments, the first Adam step is lr * sign(g) (up to eps): a classic sanity check
    got = run(lambda ps: Adam(ps, lr=0.01), device, grads=GRADS[:1])
    close(got[0], W0 - 0.01 * np.sign(GRADS[0]))


@pytest.mark.parametrize("nesterov", [False, True])
def test_lars_matches_simclr_formula(device, nesterov):
    lr, mom, wd, eta = 0.5, 0.9, 1e-2, 1e-3
    got = run(lambda ps: LARS(ps, lr=lr, momentum=mom, weight_decay=wd, trust_coefficient=eta,
                              nesterov=nesterov), device)
    w, v = W0.copy(), np.zeros_like(W0)
    for g, seen in zip(GRADS, got):
        g = g + wd * w
        trust = eta * np.linalg.norm(w) / np.linalg.norm(g)
        v = mom * v + lr * trust * g
        w = w - (mom * v + lr * trust * g if nesterov else v)
        close(seen, w)


def test_lars_excludes_biases_from_decay_and_trust_ratio(device):
    lr, mom = 0.5, 0.9
    got = run(lambda ps: LARS(ps, lr=lr, momentum=mom, weight_decay=0.1), device,
              grads=[g[0] for g in GRADS], init=B0)
    w, v = B0.copy(), np.zeros_like(B0)
    for g, seen in zip([g[0] for g in GRADS], got):
        v = mom * v + lr * g          # plain momentum SGD: no decay, trust ratio 1
        w = w - v
        close(seen, w)


def test_lars_zero_weights_use_trust_one(device):
    zero = np.zeros_like(W0)
    got = run(lambda ps: LARS(ps, lr=0.1, momentum=0.0, weight_decay=0.0), device,
              grads=GRADS[:1], init=zero)
    close(got[0], -0.1 * GRADS[0])


# ----- groups, state, edge cases --------------------------------------------------------------
class Tiny(Module):
    def __init__(self):
        self.weight = Parameter(W0)
        self.bias = Parameter(B0)

    def forward(self, x):
        return x @ self.weight + self.bias


def test_param_groups_without_decay_split_and_scheduled_decay_skips_them():
    m = Tiny()
    groups = param_groups_without_decay(m, 0.05)
    assert [len(g["params"]) for g in groups] == [1, 1]
    assert groups[0]["params"][0] is m.weight and groups[1]["params"][0] is m.bias
    opt = AdamW(groups, lr=1e-3)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    set_hyperparameter(opt, "weight_decay", 0.4)
    set_hyperparameter(opt, "lr", 2e-3)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.4, 0.0]
    assert [g["lr"] for g in opt.param_groups] == [2e-3, 2e-3]
    # a group built by hand with weight_decay=0 is a no-decay group too, whatever the default
    hand = Adam([{"params": [m.weight], "weight_decay": 0.1},
                 {"params": [m.bias], "weight_decay": 0}])
    set_hyperparameter(hand, "weight_decay", 0.3)
    assert [g["weight_decay"] for g in hand.param_groups] == [0.3, 0.0]


def test_groups_use_their_own_hyperparameters(device):
    m = Tiny().to(device)
    opt = SGD([{"params": [m.weight]}, {"params": [m.bias], "lr": 1.0}], lr=0.1)
    m.weight.grad = m.weight.xp.ones_like(m.weight.data)
    m.bias.grad = m.bias.xp.ones_like(m.bias.data)
    opt.step()
    close(m.weight.numpy(), W0 - 0.1)
    close(m.bias.numpy(), B0 - 1.0)


def test_parameters_without_grad_are_left_alone_and_zero_grad_clears(device):
    m = Tiny().to(device)
    opt = Adam(m.parameters(), lr=0.1)
    m.weight.grad = m.weight.xp.ones_like(m.weight.data)
    opt.step()
    close(m.bias.numpy(), B0)
    assert id(m.bias) not in opt.state
    opt.zero_grad()
    assert m.weight.grad is None


def test_bad_arguments_are_refused_with_names():
    p = Parameter(W0)
    with pytest.raises(ValueError, match="empty parameter list"):
        Adam([])
    with pytest.raises(ValueError, match="lr must be"):
        SGD([p], lr=-1)
    with pytest.raises(ValueError, match="beta1"):
        Adam([p], betas=(1.0, 0.999))
    with pytest.raises(ValueError, match="more than one group"):
        SGD([{"params": [p]}, {"params": [p]}], lr=0.1)
    with pytest.raises(ValueError, match="nesterov"):
        SGD([p], lr=0.1, nesterov=True)


@pytest.mark.parametrize("make", [lambda ps: Adam(ps, lr=0.01, weight_decay=0.01),
                                  lambda ps: SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
                                  lambda ps: LARS(ps, lr=0.3)])
def test_state_dict_round_trip_continues_identically(device, make):
    a, b = Parameter(W0, device=device), Parameter(W0, device=device)
    opt_a = make([a])
    for g in GRADS[:2]:
        a.grad = minienc.tensor(g, device=device).data
        opt_a.step()
    saved = opt_a.state_dict()
    assert all(isinstance(v, np.ndarray) for s in saved["state"].values()
               for k, v in s.items() if k != "step")
    b.data = a.data.copy()
    opt_b = make([b])
    opt_b.load_state_dict(saved)
    for p, opt in ((a, opt_a), (b, opt_b)):
        p.grad = minienc.tensor(GRADS[2], device=device).data
        opt.step()
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_load_state_dict_refuses_wrong_shapes():
    a = Parameter(W0)
    opt = Adam([a])
    a.grad = np.ones_like(a.data)
    opt.step()
    other = Adam([Parameter(B0)])
    with pytest.raises(ValueError, match="shape"):
        other.load_state_dict(opt.state_dict())
    with pytest.raises(ValueError, match="groups"):
        Adam([{"params": [Parameter(W0)]}, {"params": [Parameter(B0)]}]).load_state_dict(
            opt.state_dict())


def test_state_follows_the_parameter_device(device):
    p = Parameter(W0)
    opt = Adam([p], lr=0.01)
    p.grad = np.ones_like(p.data)
    opt.step()
    p.data, p.grad = minienc.tensor(p.data, device=device).data, None
    opt.to(device)
    assert all(minienc.backend.device_of(v) == device
               for k, v in opt.state[id(p)].items() if k != "step")
    p.grad = p.xp.ones_like(p.data)
    opt.step()  # would raise on a device mismatch


# ----- schedules -------------------------------------------------------------------------------
def test_warmup_cosine_key_points():
    s = WarmupCosine(base=1.0, total_steps=110, warmup_steps=10, final=0.1)
    assert s(0) == 0.0
    assert s(5) == pytest.approx(0.5)
    assert s(10) == pytest.approx(1.0)
    assert s(60) == pytest.approx(0.55)       # halfway through the cosine: the mean of 1 and 0.1
    assert s(110) == pytest.approx(0.1)
    assert s(1000) == pytest.approx(0.1)
    values = [s(t) for t in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert WarmupCosine(2.0, 10)(0) == 2.0


def test_cosine_linear_and_constant_key_points():
    m = Cosine(0.996, 1.0, total_steps=100)
    assert m(0) == pytest.approx(0.996) and m(100) == pytest.approx(1.0)
    assert m(50) == pytest.approx(0.998)
    wd = Cosine(0.04, 0.4, 100)
    assert wd(25) == pytest.approx(0.4 + (0.04 - 0.4) * (1 + math.cos(math.pi / 4)) / 2)
    lin = LinearSchedule(0.996, 1.0, 100)
    assert lin(25) == pytest.approx(0.997) and lin(200) == pytest.approx(1.0)
    assert Constant(3e-4)(12345) == 3e-4
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupCosine(1.0, total_steps=10, warmup_steps=20)


# ----- EMA ---------------------------------------------------------------------------------------
def _pair(device):
    online, target = Tiny().to(device), Tiny().to(device)
    online.weight.data = online.weight.data * 3.0
    online.bias.data = online.bias.data - 1.0
    return online, target


def test_ema_momentum_one_keeps_target_and_zero_copies_online(device):
    online, target = _pair(device)
    ema_update(target, online, 1.0)
    np.testing.assert_array_equal(target.weight.numpy(), np.float32(W0))
    ema_update(target, online, 0.0)
    np.testing.assert_array_equal(target.weight.numpy(), online.weight.numpy())
    np.testing.assert_array_equal(target.bias.numpy(), online.bias.numpy())


def test_ema_formula_and_copy_is_frozen(device):
    online, _ = _pair(device)
    ema = EMA(online, momentum=0.9)
    assert all(not p.requires_grad for p in ema.target.parameters())
    assert ema.target.weight is not online.weight
    before = ema.target.weight.numpy().astype(np.float64)
    online.weight.data = online.weight.data + 1.0
    ema.update()
    close(ema.target.weight.numpy(), 0.9 * before + 0.1 * online.weight.numpy())
    assert ema.target.weight.grad is None and ema.target.weight.dtype == np.float32


def test_ema_refuses_mismatched_modules():
    class Other(Module):
        def __init__(self):
            self.weight = Parameter(W0.T)

    with pytest.raises(ValueError, match="EMA"):
        EMA(Tiny(), target=Other())


# ----- clipping ----------------------------------------------------------------------------------
@pytest.mark.parametrize("max_norm", [0.1, 100.0])
def test_clip_grad_norm_matches_formula(device, max_norm):
    m = Tiny().to(device)
    m.weight.grad = minienc.tensor(GRADS[0], device=device).data
    m.bias.grad = minienc.tensor(GRADS[1][0], device=device).data
    total = math.sqrt((GRADS[0] ** 2).sum() + (GRADS[1][0] ** 2).sum())
    norm = clip_grad_norm(m.parameters(), max_norm)
    assert norm.device == device and norm.dtype == np.float32   # stays on the device, float32
    assert norm.item() == pytest.approx(total, rel=1e-5)
    scale = min(1.0, max_norm / (total + 1e-6))
    close(minienc.backend.to_host(m.weight.grad), GRADS[0] * scale)
    close(minienc.backend.to_host(m.bias.grad), GRADS[1][0] * scale)


def test_state_follows_a_parameter_moved_after_the_first_step(device):
    m = Tiny()
    opt = SGD(m.parameters(), lr=0.1, momentum=0.9)
    for p in m.parameters():
        p.grad = p.xp.ones_like(p.data)
    opt.step()
    m.to(device)            # Module.to keeps the Parameter objects; the optimizer is not told
    for p in m.parameters():
        p.grad = p.xp.ones_like(p.data)
    opt.step()
    assert all(minienc.backend.device_of(s["momentum_buffer"]) == device
               for s in opt.state.values())
    close(m.bias.numpy(), B0 - 0.1 - 0.1 * 1.9)   # second step: buffer 0.9 * 1 + 1


@pytest.mark.parametrize("make", [lambda ps: minienc.optim.Adam(ps, lr=1e-2),
                                  lambda ps: minienc.optim.SGD(ps, lr=1e-2, momentum=0.9),
                                  lambda ps: minienc.optim.LARS(ps, lr=1e-2)])
def test_optimizer_state_follows_astype_as_it_follows_to(make):
    """Regression (issue 28): after model.astype(float64) the moments stayed float32, so the
    float64 run kept float32 rounding in its updates."""
    minienc.manual_seed(0)
    model = minienc.nn.Linear(3, 2)
    opt = make(model.parameters())
    x = minienc.randn(4, 3)
    (model(x) ** 2).mean().backward()
    opt.step()
    model.astype(np.float64)
    opt.zero_grad()
    (model(x.astype(np.float64)) ** 2).mean().backward()
    opt.step()                                     # lazily, at the next step
    kinds = {v.dtype for s in opt.state.values() for k, v in s.items() if k != "step"}
    assert kinds == {np.dtype(np.float64)}, kinds
    assert opt.astype(np.float32) is opt           # and at once, when asked
    kinds = {v.dtype for s in opt.state.values() for k, v in s.items() if k != "step"}
    assert kinds == {np.dtype(np.float32)}, kinds
