"""Optimizers, schedules, EMA targets and gradient clipping.

    opt = AdamW(param_groups_without_decay(model, 0.05), lr=1e-3)
    loss.backward(); clip_grad_norm(model.parameters(), 1.0); opt.step(); opt.zero_grad()
"""
from .adam import Adam, AdamW
from .clip import clip_grad_norm, grad_norm
from .ema import EMA, ema_update
from .lars import LARS
from .optimizer import Optimizer, param_groups_without_decay, set_hyperparameter
from .schedules import Constant, Cosine, LinearSchedule, Schedule, WarmupCosine
from .sgd import SGD
