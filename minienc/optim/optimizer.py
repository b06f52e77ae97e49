"""The optimizer base class: parameter groups, per-parameter state, saving and moving state.

An optimizer holds `param_groups`, a list of dicts. Each group has "params" (a list of
Parameters) and its own hyperparameters ("lr", "weight_decay", ...), filled from the
optimizer's defaults when a group does not set them. Schedules change `group["lr"]` and
`group["weight_decay"]` between steps; a subclass only writes `_update(p, group, state)`.

State lives per parameter (Adam's moments, SGD's momentum buffer), created on the parameter's
device at its first step, and follows the parameter when it moves or is cast (`opt.to(device)`,
`opt.astype(dtype)`, or lazily at the next step after `module.to(device)` / `module.astype`).
`state_dict()` turns it into host NumPy arrays and Python scalars, which is what a checkpoint
stores.

Updates run in place on `p.data` and read no device value back to the host: a step is a stream
of array operations the GPU can run without waiting for Python. Each optimizer's update is a
function of arrays written as its formula; `kernels.variant` may run a faster one (one fused kernel
on the GPU, no temporaries on the host; see minienc/kernels/).
"""
import math

from .. import backend, checks
from ..engine import Tensor


class Optimizer:
    """Base class. `params` is a list of Parameters, or a list of dicts (parameter groups):
    `[{"params": [...], "weight_decay": 0.0}, {"params": [...], "lr": 1e-4}]`."""

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.param_groups = []
        self.state = {}  # id(parameter) -> {"step": int, name: array}
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group):
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"{type(self).__name__}: a parameter group is a dict with a 'params' "
                            f"list, got {type(group).__name__}")
        group = dict(group)
        group["params"] = list(group["params"])
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for p in group["params"]:
            if not isinstance(p, Tensor):
                raise TypeError(f"{type(self).__name__}: parameters must be Tensors, got "
                                f"{type(p).__name__}")
            if id(p) in seen:
                raise ValueError(f"{type(self).__name__}: a parameter of shape {p.shape} is in "
                                 f"more than one group")
            seen.add(id(p))
        # A group built with weight_decay=0 means "never decay these" (biases, norms): schedules
        # that set weight decay leave it at 0 (see `set_hyperparameter`).
        if "weight_decay" in group and group["weight_decay"] == 0:
            group.setdefault("weight_decay_scale", 0.0)
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self.param_groups.append(group)

    # ----- the step ---------------------------------------------------------------------------
    def zero_grad(self):
        """Drop every gradient (the next backward allocates fresh ones)."""
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def step(self):
        """Update every parameter that has a gradient, in place."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group, self._state_for(p))
                    p.bump_version()  # a graph that saved p can no longer run its backward

    def _update(self, p, group, state):
        raise NotImplementedError

    def _state_for(self, p):
        state = self.state.get(id(p))
        if state is None:
            state = self.state[id(p)] = {"step": 0}
            self._init_state(p, state)
            return state
        for key, value in state.items():
            if key != "step":
                # the parameter moved or was cast (Module.to / astype): its state follows it
                if type(value) is not type(p.data) or value.dtype != p.data.dtype:
                    self._move_state(state, backend.device_of(p.data), p.data.dtype)
                break
        return state

    @staticmethod
    def _move_state(state, device, dtype=None):
        for key, value in state.items():
            if key != "step":
                value = value if device is None else backend.to_device(value, device)
                state[key] = value if dtype is None else value.astype(dtype, copy=False)

    def _init_state(self, p, state):
        """Create this optimizer's per-parameter arrays (zeros like p.data) in `state`."""

    # ----- moving and saving ------------------------------------------------------------------
    def to(self, device):
        """Move every state array to `device` (parameters are moved by `Module.to`)."""
        for state in self.state.values():
            self._move_state(state, device)
        return self

    def astype(self, dtype):
        """Cast every state array to `dtype` (parameters are cast by `Module.astype`; a step
        after it casts the state of a parameter whose dtype changed in any case)."""
        for state in self.state.values():
            self._move_state(state, None, dtype)
        return self

    def _indexed_params(self):
        return [p for group in self.param_groups for p in group["params"]]

    def state_dict(self):
        """{"param_groups": [hyperparameters, "params": [indices]], "state": {index: {...}}}
        with host NumPy arrays and Python scalars only, so it fits in an .npz + JSON."""
        groups, index = [], 0
        for group in self.param_groups:
            entry = {k: v for k, v in group.items() if k != "params"}
            entry["params"] = list(range(index, index + len(group["params"])))
            index += len(group["params"])
            groups.append(entry)
        state = {}
        for i, p in enumerate(self._indexed_params()):
            if id(p) in self.state:
                state[i] = {k: (v if k == "step" else backend.to_host(v))
                            for k, v in self.state[id(p)].items()}
        return {"param_groups": groups, "state": state}

    def check_state_dict(self, state_dict):
        """Raise if `state_dict` does not fit these parameter groups (counts, shapes and dtypes of
        the arrays, integer steps, hyperparameters of the types this optimizer uses); changes
        nothing, so a checkpoint can check every part before it loads any."""
        name = type(self).__name__
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"{name}.load_state_dict: the state has {len(groups)} parameter "
                             f"groups, this optimizer has {len(self.param_groups)}")
        for i, (saved, own) in enumerate(zip(groups, self.param_groups)):
            if len(saved["params"]) != len(own["params"]):
                raise ValueError(f"{name}.load_state_dict: group {i} has {len(saved['params'])} "
                                 f"parameters in the state but {len(own['params'])} here")
            for key, value in saved.items():
                if key != "params" and not _same_kind(value, own.get(key, value)):
                    raise ValueError(f"{name}.load_state_dict: group {i} has {key}={value!r} in "
                                     f"the state, which does not fit {own.get(key)!r}")
        params = self._indexed_params()
        for key, saved in state_dict["state"].items():
            i = int(key)
            if not 0 <= i < len(params):
                raise ValueError(f"{name}.load_state_dict: state for parameter {i}, but there are "
                                 f"only {len(params)}")
            step = saved.get("step", 0)
            if not checks.is_count(step):
                raise ValueError(f"{name}.load_state_dict: parameter {i} has step {step!r}, not an "
                                 f"integer >= 0")
            for k, value in saved.items():
                if k == "step":
                    continue
                if tuple(value.shape) != params[i].shape:
                    raise ValueError(f"{name}.load_state_dict: state '{k}' of parameter {i} has "
                                     f"shape {tuple(value.shape)}, the parameter has shape "
                                     f"{params[i].shape}")
                if value.dtype.kind != "f":
                    raise ValueError(f"{name}.load_state_dict: state '{k}' of parameter {i} has "
                                     f"dtype {value.dtype}, expected a floating array")

    def load_state_dict(self, state_dict):
        """Restore hyperparameters and state saved by `state_dict`; the groups must hold the same
        number of parameters with the same shapes (checked before anything is changed)."""
        self.check_state_dict(state_dict)
        params, new_state = self._indexed_params(), {}
        for key, saved in state_dict["state"].items():
            p = params[int(key)]
            entry = {"step": int(saved.get("step", 0))}
            for k, value in saved.items():
                if k != "step":
                    value = backend.numpy.asarray(value).astype(p.dtype)
                    entry[k] = backend.to_device(value, p.device)
            new_state[id(p)] = entry
        for saved, own in zip(state_dict["param_groups"], self.param_groups):
            own.update({k: (tuple(v) if isinstance(v, list) else v)
                        for k, v in saved.items() if k != "params"})
        self.state = new_state
        return self

    def __repr__(self):
        lines = [f"  group {i}: {len(g['params'])} params, " +
                 ", ".join(f"{k}={v}" for k, v in g.items() if k != "params")
                 for i, g in enumerate(self.param_groups)]
        return f"{type(self).__name__}(\n" + "\n".join(lines) + "\n)"


def _same_kind(saved, own):
    """Whether a saved hyperparameter can stand where `own` stands: a number for a number, a
    bool for a bool, a same-length sequence of numbers for a sequence (betas), a string for a
    string."""
    def number(v):
        return checks.is_real(v) and math.isfinite(v)
    if isinstance(own, bool):
        return isinstance(saved, bool)
    if isinstance(own, (int, float)):
        return number(saved)
    if isinstance(own, (list, tuple)):
        return isinstance(saved, (list, tuple)) and len(saved) == len(own) and all(map(number, saved))
    return isinstance(saved, type(own))


def set_hyperparameter(optimizer, key, value):
    """Set `key` (e.g. "lr", "weight_decay") in every group to `value * group[key + "_scale"]`
    (scale 1 unless the group says otherwise; no-decay groups carry weight_decay_scale=0)."""
    value = float(value)
    for group in optimizer.param_groups:
        group[key] = value * group.get(key + "_scale", 1.0)


def param_groups_without_decay(module, weight_decay, extra=None):
    """Two groups: weights with `weight_decay`, and biases and norm parameters (ndim <= 1) with
    none, as SimCLR, MAE and I-JEPA train. `module` may also be a list of modules."""
    modules = module if isinstance(module, (list, tuple)) else [module]
    decay, no_decay = [], []
    for m in modules:
        for p in m.parameters():
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0, "weight_decay_scale": 0.0}]
    for g in groups:
        g.update(extra or {})
    return [g for g in groups if g["params"]]


def check_hyperparameters(name, lr, weight_decay, **others):
    """Refuse nonsense early with the optimizer's name in the message: lr and weight_decay finite
    numbers >= 0, each of `others` (value, low, high) in [low, high)."""
    checks.non_negative(name, "lr", lr)
    checks.non_negative(name, "weight_decay", weight_decay)
    for key, (value, low, high) in others.items():
        checks.in_range(name, key, value, low, high, include_high=False)
