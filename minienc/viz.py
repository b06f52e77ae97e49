"""The computation graph behind a tensor, as Graphviz DOT text: the picture micrograd and DeZero
teach backpropagation with, here also showing where the gradient stops.

    loss = byol.loss(view1, view2)
    minienc.viz.graph(loss, "runs/byol_graph", names={"online": byol.online_network, "view 1": view1})
    # runs/byol_graph.dot, and runs/byol_graph.png where Graphviz's `dot` program is installed

What is drawn is what backward will walk: one ellipse per op (its name and output shape), one box
per leaf. Leaves that take a gradient (parameters, or tensors made with requires_grad=True) are
blue; leaves that do not are grey (named data, and single numbers such as the 2 of 2 - 2 cos),
and the others are drawn as cuts (red, dashed, "no gradient"): a `detach()`, a value computed
under `no_grad()` -- a stop-gradient, or an EMA target network's output -- or a constant array. Nothing of a target network's own graph appears
at all: it was never recorded, which is exactly why no gradient reaches it.
"""
import os
import shutil
import subprocess

from .backend import get_xp

MAX_NODES = 2000


def _label_of(names):
    """id(tensor) -> name, from names: name -> Tensor, or name -> Module (its parameters, each as
    name.parameter); and the named data tensors, to recognise their views."""
    labels, data = {}, []
    for name, value in (names or {}).items():
        if hasattr(value, "named_parameters"):
            for key, p in value.named_parameters():
                labels[id(p)] = f"{name}.{key}"
        else:
            labels[id(value)] = name
            data.append((name, value))
    return labels, data


def _view_of(t, data):
    """The name of the named data tensor that `t` is a view of (a reshape or a slice of a tensor
    without a gradient makes a new leaf over the same memory), or None."""
    for name, value in data:
        xp = get_xp(t.data)
        if hasattr(xp, "may_share_memory") and xp.may_share_memory(t.data, value.data):
            return name
    return None


def _shape(t):
    return "x".join(str(s) for s in t.shape) or "scalar"


def _quote(text):
    """A DOT string: backslashes and quotes escaped, line breaks as DOT's centred \\n."""
    text = str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return '"' + text + '"'


def to_dot(output, names=None, max_nodes=MAX_NODES):
    """DOT text of the graph that produced the Tensor `output` (see the module docstring).
    `names`: name -> Tensor or Module, to label data inputs and parameters."""
    labels, data = _label_of(names)
    creator = output._creator
    lines = ["digraph minienc {", '  rankdir="BT";',
             '  node [fontname="Helvetica", fontsize=10]; edge [fontname="Helvetica", fontsize=8];',
             f'  out [label={_quote((labels.get(id(output), "output")) + chr(10) + _shape(output))}, '
             f'shape=box, style="filled,bold", fillcolor="#ffe9a8"];']
    if creator is None:
        lines.append("}")
        return "\n".join(lines) + "\n"
    seen, order, stack = {id(creator)}, [], [creator]
    while stack:   # iterative: a graph of 10,000 ops is no deeper for this than one of ten
        fn = stack.pop()
        if fn.inputs is None:
            raise RuntimeError("viz.graph: this graph was freed by backward(); draw it before "
                               "backward, or call backward(retain_graph=True)")
        order.append(fn)
        if len(order) > max_nodes:
            raise ValueError(f"viz.graph: more than {max_nodes} ops; draw a smaller piece (a loss "
                             f"on one small batch, one block) or pass max_nodes=")
        for t in fn.inputs:
            if t._creator is not None and id(t._creator) not in seen:
                seen.add(id(t._creator))
                stack.append(t._creator)
    lines.append(f'  f{id(creator)} -> out [label={_quote(_shape(output))}];')
    leaves = set()
    for fn in order:
        lines.append(f'  f{id(fn)} [label={_quote(fn.name)}, shape=ellipse];')
        for t in fn.inputs:
            if t._creator is not None:
                lines.append(f'  f{id(t._creator)} -> f{id(fn)} [label={_quote(_shape(t))}];')
                continue
            node = f"t{id(t)}"
            if id(t) not in labels and not t.requires_grad and (view := _view_of(t, data)):
                labels[id(t)] = view
            if node not in leaves:
                leaves.add(node)
                lines.append(f"  {node} {_leaf_style(t, labels.get(id(t)))};")
            cut = not t.requires_grad and id(t) not in labels and t.size > 1
            lines.append(f'  {node} -> f{id(fn)}' + (' [style=dashed, color="#c0392b", label="gradient '
                         'stops", fontcolor="#c0392b"];' if cut else ";"))
    lines.append("}")
    return "\n".join(lines) + "\n"


def _leaf_style(t, name):
    if t.requires_grad:
        text, colour, extra = f"{name or 'parameter'}\n{_shape(t)}", "#cfe3ff", ""
    elif name is not None:
        text, colour, extra = f"{name}\n{_shape(t)}", "#eeeeee", ""
    elif t.size == 1:   # a number in a formula (the 2 of 2 - 2 cos): no gradient to stop
        text, colour, extra = f"constant\n{_shape(t)}", "#eeeeee", ""
    else:   # a tensor the gradient cannot pass: detached, made under no_grad, or a constant
        text, colour, extra = f"no gradient\n{_shape(t)}", "#fbe3e0", ', style="filled,dashed", color="#c0392b"'
    style = "" if extra else ', style="filled"'
    return f"[label={_quote(text)}, shape=box, fillcolor={_quote(colour)}{style}{extra}]"


def graph(output, path=None, names=None, max_nodes=MAX_NODES):
    """Write the graph of `output` as `path`.dot and, where Graphviz's `dot` program is
    installed, render `path`.png; without it, say so in one line and skip the picture. With
    path None, only return the DOT text. Returns the DOT text."""
    dot = to_dot(output, names, max_nodes)
    if path is None:
        return dot
    base = path[:-4] if path.endswith((".dot", ".png")) else path
    folder = os.path.dirname(base)
    if folder:
        os.makedirs(folder, exist_ok=True)
    with open(base + ".dot", "w") as f:
        f.write(dot)
    program = shutil.which("dot")
    if program is None:
        print(f"viz.graph: wrote {base}.dot; no picture, as Graphviz's `dot` is not installed "
              f"(apt install graphviz, or paste the .dot into any Graphviz viewer)")
    else:
        subprocess.run([program, "-Tpng", base + ".dot", "-o", base + ".png"], check=True,
                       capture_output=True, timeout=120)
    return dot
