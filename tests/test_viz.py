"""minienc.viz.graph draws what backward will walk: every op once, parameters named, data named,
and a stop-gradient (detach, no_grad, an EMA target's output) drawn as a cut; the .dot is
always written, the .png where Graphviz's dot exists (skipped with a note otherwise)."""
import re
import shutil

import numpy as np
import pytest

import minienc
from minienc import nn
from minienc.viz import graph, to_dot


def declared_and_used(dot):
    declared = set(re.findall(r"^\s+(\w+) \[", dot, re.M))
    used = set(re.findall(r"^\s+(\w+) -> (\w+)", dot, re.M))
    return declared, {a for a, _ in used} | {b for _, b in used}


def test_every_op_appears_once_and_every_edge_joins_declared_nodes():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    x = minienc.tensor(np.ones((5, 4)))
    loss = minienc.mse_loss(model(x), minienc.tensor(np.zeros((5, 2))))
    dot = to_dot(loss, names={"model": model, "images": x})
    declared, used = declared_and_used(dot)
    assert used <= declared, used - declared
    ops = re.findall(r'label="([a-z_]+)", shape=ellipse', dot)
    assert "relu" in ops and len(ops) == len(set(re.findall(r"^\s+(f\d+) \[", dot, re.M)))
    for name in ("model.layers.0.weight", "model.layers.0.bias", "model.layers.2.weight", "images\\n5x4"):
        assert name in dot, name
    assert "no gradient" in dot   # the zero target: a constant the gradient does not pass
    assert dot.count("no gradient") == 1


def test_a_stop_gradient_and_an_ema_target_are_drawn_as_cuts():
    online, target = nn.Linear(3, 3), nn.Linear(3, 3)
    x = minienc.tensor(np.ones((2, 3)))
    with minienc.no_grad():
        z_target = target(x)                       # the EMA target's side: no graph at all
    z = online(x)
    loss = ((z - z_target) ** 2).mean() + ((z - z.detach()) ** 2).mean()
    dot = to_dot(loss, names={"online": online, "images": x})
    assert dot.count("no gradient") == 2           # the target's output and the detached copy
    assert dot.count('style=dashed, color="#c0392b"') == 2
    assert "online.weight" in dot and "target" not in dot   # nothing of the target is drawn


def test_a_freed_graph_and_a_leaf(tmp_path):
    w = minienc.tensor(np.ones(3), requires_grad=True)
    loss = (w * w).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="freed by backward"):
        to_dot(loss)
    assert "parameter" not in to_dot(w) and "out [" in to_dot(w)


def test_graph_writes_the_dot_and_renders_or_says_why(tmp_path, capsys, monkeypatch):
    w = minienc.tensor(np.ones(3), requires_grad=True)
    loss = (w.exp() * 2).sum()
    if shutil.which("dot"):
        graph(loss, str(tmp_path / "g"))
        assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setattr(shutil, "which", lambda name: None)
    text = graph(loss, str(tmp_path / "h.dot"))
    assert (tmp_path / "h.dot").read_text() == text and not (tmp_path / "h.png").exists()
    assert "Graphviz's `dot` is not installed" in capsys.readouterr().out


def test_embeddings_figure_has_a_tsne_panel_beside_the_pca(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    from minienc.eval.plots import plot_embeddings, tsne_map
    rs = np.random.default_rng(0)
    labels = np.arange(60) % 3
    z = rs.normal(size=(60, 8)) + 4 * np.eye(8)[labels]
    mapped = tsne_map(z)
    assert mapped.shape == (60, 2)
    centres = np.stack([mapped[labels == c].mean(0) for c in range(3)])
    spread = max(np.linalg.norm(mapped[labels == c] - centres[c], axis=1).mean() for c in range(3))
    assert min(np.linalg.norm(centres[a] - centres[b]) for a in range(3) for b in range(a)) > spread
    both, pca = tmp_path / "both.png", tmp_path / "pca.png"
    plot_embeddings(z, labels, str(both), tsne=True)
    plot_embeddings(z, labels, str(pca))
    from matplotlib.image import imread
    assert imread(both).shape[1] > 1.6 * imread(pca).shape[1]     # two panels side by side
    import sys
    monkeypatch.setitem(sys.modules, "sklearn.manifold", None)
    plot_embeddings(z, labels, str(tmp_path / "no_sklearn.png"), tsne=True)
    assert "no t-SNE panel" in capsys.readouterr().out
    assert imread(tmp_path / "no_sklearn.png").shape[1] < 1.2 * imread(pca).shape[1]


def test_a_view_of_named_data_is_recognised_as_that_data():
    layer = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    images = minienc.tensor(np.ones((3, 1, 2, 2)))
    dot = to_dot(layer(images).sum(), names={"images": images, "layer": layer})
    assert "images\\n3x4" in dot and "no gradient" not in dot   # the flattened batch
