"""Module and Parameter: the containers every layer and encoder is built from.

A `Module` finds its parameters, buffers and children by looking at its attributes (as PyTorch
does), so a layer only has to assign them in `__init__` -- directly, or inside lists, tuples and
dicts at any depth (`self.blocks = [...]`, `self.heads = {"text": ..., "image": ...}`), named
`blocks.0`, `heads.text`. A set of modules has no order to name them by and is refused.
`state_dict()` returns host NumPy arrays keyed by dotted names, which is what checkpoints store.
"""
from collections import OrderedDict

from .. import backend
from ..engine import Tensor


class Parameter(Tensor):
    """A tensor that a Module owns and an optimizer updates."""

    __slots__ = ()

    def __init__(self, data, requires_grad=True, device=None):
        super().__init__(data, requires_grad=requires_grad, device=device)

    def __repr__(self):
        return f"Parameter(shape={self.shape}, dtype={self.dtype}, device={self.device!r})"


class Module:
    training = True

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def __getattr__(self, name):
        # only reached when normal lookup fails: lets a layer read its buffers as attributes
        buffers = vars(self).get("_buffers")
        if buffers is not None and name in buffers:
            return buffers[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def forward(self, *args, **kwargs):
        raise NotImplementedError

    # ----- what it holds ----------------------------------------------------------------------
    def register_buffer(self, name, array):
        """Non-trainable state that belongs in state_dict (BatchNorm's running statistics)."""
        if "_buffers" not in vars(self):
            self._buffers = OrderedDict()
        self._buffers[name] = array

    def named_children(self):
        for name, value in _members(self):
            if isinstance(value, Module):
                yield name, value

    def children(self):
        return [m for _, m in self.named_children()]

    def modules(self):
        yield self
        for child in self.children():
            yield from child.modules()

    def named_parameters(self, prefix=""):
        seen = set()
        for name, value in _own_parameters(self):
            if id(value) not in seen:
                seen.add(id(value))
                yield prefix + name, value
        for name, child in self.named_children():
            for sub_name, p in child.named_parameters(prefix + name + "."):
                if id(p) not in seen:  # a tied weight is listed once
                    seen.add(id(p))
                    yield sub_name, p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix=""):
        for name, array in vars(self).get("_buffers", {}).items():
            yield prefix + name, array
        for name, child in self.named_children():
            yield from child.named_buffers(prefix + name + ".")

    def num_parameters(self):
        return sum(p.size for p in self.parameters())

    # ----- modes and devices ------------------------------------------------------------------
    def train(self, mode=True):
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def to(self, device):
        """Move every parameter and buffer to `device` in place (parameters keep their identity,
        so an optimizer built before the move still holds them)."""
        for m in self.modules():
            for _, value in _own_parameters(m):
                value.data = backend.to_device(value.data, device)
                if value.grad is not None:
                    value.grad = backend.to_device(value.grad, device)
            for name, array in vars(m).get("_buffers", {}).items():
                m._buffers[name] = backend.to_device(array, device)
        return self

    def astype(self, dtype):
        """Cast every floating parameter and buffer to `dtype` in place (float64 for gradcheck)."""
        for m in self.modules():
            for _, value in _own_parameters(m):
                if backend.is_floating(value.dtype):
                    value.data = value.data.astype(dtype)
                    value.grad = None
            for name, array in vars(m).get("_buffers", {}).items():
                if backend.is_floating(array.dtype):
                    m._buffers[name] = array.astype(dtype)
        return self

    @property
    def device(self):
        for p in self.parameters():
            return p.device
        return backend.get_device()

    # ----- saving and loading -----------------------------------------------------------------
    def state_dict(self):
        """Dotted name -> host NumPy array, for parameters and buffers."""
        state = OrderedDict((name, p.numpy()) for name, p in self.named_parameters())
        state.update((name, backend.to_host(array)) for name, array in self.named_buffers())
        return state

    def load_state_dict(self, state, strict=True):
        """Copy `state` (dotted name -> array, as `state_dict` gives) into this module's
        parameters and buffers, cast to their dtypes, on their devices. Every entry is checked
        first -- the keys (all of them when strict), each shape, each dtype (floating for a
        floating parameter or buffer, integer or boolean for the others) -- so a refused state
        changes nothing."""
        own = dict(self.named_parameters())
        buffers = {}
        for prefix, m in self._named_modules():
            for name in vars(m).get("_buffers", {}):
                buffers[prefix + name] = (m, name)
        missing = [k for k in list(own) + list(buffers) if k not in state]
        unexpected = [k for k in state if k not in own and k not in buffers]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        values = {}
        for name, target in [(n, p.data) for n, p in own.items()] + \
                [(n, m._buffers[key]) for n, (m, key) in buffers.items()]:
            if name in state:
                values[name] = _checked_value(name, state[name], target)
        for name, p in own.items():
            if name in values:
                p.data = backend.to_device(values[name].astype(p.dtype), p.device)
        for name, (m, key) in buffers.items():
            if name in values:
                old = m._buffers[key]
                m._buffers[key] = backend.to_device(values[name].astype(old.dtype), backend.device_of(old))
        return self

    def path_of(self, module):
        """The dotted prefix ("" for this module itself, else ending in ".") under which
        `module`'s parameters and buffers stand in this module's state_dict: the first place it
        is held, where named_parameters lists a module held twice. Errors when it is not held,
        or when its tensors are not all under that prefix (parameters tied into another module)."""
        prefix = next((p for p, m in self._named_modules() if m is module), None)
        if prefix is None:
            raise ValueError(f"{type(self).__name__}.path_of: {type(module).__name__} is not one of "
                             f"its modules")
        names = {n for n, _ in self.named_parameters()} | {n for n, _ in self.named_buffers()}
        outside = [n for n, _ in list(module.named_parameters()) + list(module.named_buffers())
                   if prefix + n not in names]
        if outside:
            raise ValueError(f"{type(self).__name__}.path_of: {type(module).__name__} at "
                             f"{prefix.rstrip('.') or '(the module itself)'} has tensors listed "
                             f"elsewhere in the state_dict (tied): {outside[:3]}")
        return prefix

    def _named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self.named_children():
            yield from child._named_modules(prefix + name + ".")

    def __repr__(self):
        lines = [f"  ({name}): " + repr(child).replace("\n", "\n  ") for name, child in self.named_children()]
        return type(self).__name__ + ("(\n" + "\n".join(lines) + "\n)" if lines else "()")


def _members(module):
    """(name, value) for every Parameter and Module among `module`'s attributes, looking inside
    lists, tuples and dicts at any depth (named `blocks.0`, `heads.text`, `stages.1.0`)."""
    for name, value in vars(module).items():
        yield from _flatten(name, value, f"{type(module).__name__}.{name}")


def _flatten(name, value, where):
    if isinstance(value, (Parameter, Module)):
        yield name, value
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _flatten(f"{name}.{i}", item, where)
    elif isinstance(value, dict):
        for key, item in value.items():
            found = list(_flatten(f"{name}.{key}", item, where))
            if found and (not isinstance(key, str) or "." in key):
                raise TypeError(f"{where} holds a module or parameter under the dict key {key!r}: "
                                f"keys must be strings without dots (they become state_dict names)")
            yield from found
    elif isinstance(value, (set, frozenset)) and any(isinstance(v, (Parameter, Module)) for v in value):
        raise TypeError(f"{where} holds modules or parameters in a set, which has no order to name "
                        f"them by (state_dict keys): use a list or a dict")


def _own_parameters(module):
    """(name, Parameter) for the parameters `module` holds itself (not its children's)."""
    return ((name, value) for name, value in _members(module) if isinstance(value, Parameter))


def _checked_value(name, value, target):
    """`value` as a host array that can replace `target` (the parameter's or buffer's array):
    same shape, and a numeric dtype of the same kind."""
    value = backend.numpy.asarray(value)
    if value.shape != tuple(target.shape):
        raise ValueError(f"load_state_dict: {name} has shape {tuple(target.shape)} in the model but "
                         f"{value.shape} in the state")
    same_kind = value.dtype.kind == "f" if target.dtype.kind == "f" else value.dtype.kind in "biu"
    if value.dtype.hasobject or not same_kind:
        raise TypeError(f"load_state_dict: {name} is {target.dtype} in the model but {value.dtype} "
                        f"in the state")
    return value


def functional_call(module, params, *args, **kwargs):
    """Run `module(*args, **kwargs)` with some of its parameters replaced by the tensors in
    `params` (dotted name -> Tensor), then put the originals back. Gradients then flow to the
    given tensors: this is how the tests gradcheck a layer with respect to its parameters."""
    owners = {}  # dotted name -> (module, attribute, parameter)
    for prefix, m in module._named_modules():
        for attribute, value in vars(m).items():
            for dotted, p in _flatten(attribute, value, type(m).__name__):
                if isinstance(p, Parameter):
                    owners[prefix + dotted] = (m, attribute, p)
    unknown = [k for k in params if k not in owners]
    if unknown:
        raise KeyError(f"functional_call: {type(module).__name__} has no parameters {unknown}")
    swaps = {}   # (id(module), attribute) -> (module, attribute, {id(parameter): tensor})
    for key, tensor in params.items():
        m, attribute, p = owners[key]
        swaps.setdefault((id(m), attribute), (m, attribute, {}))[2][id(p)] = tensor
    originals = [(m, attribute, vars(m)[attribute]) for m, attribute, _ in swaps.values()]
    try:
        for m, attribute, replacements in swaps.values():
            vars(m)[attribute] = _substituted(vars(m)[attribute],
                                              lambda leaf, r=replacements: r.get(id(leaf), leaf))
        return module(*args, **kwargs)
    finally:
        for m, attribute, original in originals:
            vars(m)[attribute] = original


def _substituted(value, swap):
    """`value` with each Parameter or Module `leaf` in it replaced by `swap(leaf)`; the lists,
    tuples and dicts on the way are rebuilt (the caller's own containers stay intact), so this
    reaches every member that `_members` names."""
    if isinstance(value, (Parameter, Module)):
        return swap(value)
    if isinstance(value, (list, tuple)):
        items = [_substituted(v, swap) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)  # namedtuple
    if isinstance(value, dict):
        return type(value)((k, _substituted(v, swap)) for k, v in value.items())
    return value


class Sequential(Module):
    def __init__(self, *layers):
        self.layers = list(layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    def __getitem__(self, i):
        return self.layers[i]

    def __len__(self):
        return len(self.layers)
