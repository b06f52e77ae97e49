"""The NumPy/CuPy switch: devices, the CuPy-missing message, seeding, scatter-add, and the rule
that only backend.py names numpy or cupy (so the CuPy path cannot rot unseen on a CPU machine)."""
import ast
import pathlib
import sys

import numpy as np
import pytest

import minienc
from minienc import backend

PACKAGE = pathlib.Path(minienc.__file__).parent


def test_array_namespace_and_devices(device):
    x = minienc.tensor([1.0, 2.0], device=device)
    assert backend.get_xp(x.data) is backend.xp_for(device) is x.xp
    assert backend.device_of(x.data) == device
    assert backend.to_device(x.data, device) is x.data  # no copy when nothing crosses
    host = backend.to_host(x.data)
    assert type(host) is np.ndarray and host.tolist() == [1.0, 2.0]
    assert backend.get_xp(np.ones(1)) is np and backend.xp_for("cpu") is np
    with pytest.raises(ValueError, match=r"unknown device 'tpu': expected one of \('cpu', 'cuda'\)"):
        minienc.tensor([1.0], device="tpu")


@pytest.fixture
def no_cupy(monkeypatch):
    """Pretend CuPy is not installed, also on a machine where it is."""
    monkeypatch.setattr(backend, "_cupy", None)
    monkeypatch.setitem(sys.modules, "cupy", None)  # a None entry makes `import cupy` fail
    monkeypatch.setitem(sys.modules, "cupyx", None)


def test_cuda_without_cupy_says_what_to_install(no_cupy, monkeypatch):
    message = r"device 'cuda' needs CuPy: pip install 'minienc\[gpu\]' \(cupy-cuda12x\)"
    with pytest.raises(RuntimeError, match=message):
        minienc.tensor([1.0], device="cuda")
    with pytest.raises(RuntimeError, match=message):
        minienc.zeros(3, device="cuda")
    monkeypatch.setattr(backend, "_default_device", None)
    with pytest.raises(RuntimeError, match=message):
        minienc.set_device("cuda")
    assert backend.cuda_available() is False


def test_default_device_from_environment(monkeypatch):
    monkeypatch.setattr(backend, "_default_device", None)
    monkeypatch.setenv("MINIENC_DEVICE", "cpu")
    assert minienc.get_device() == "cpu"
    assert minienc.tensor([1.0]).device == "cpu" and minienc.zeros(2).device == "cpu"
    monkeypatch.setattr(backend, "_default_device", None)
    monkeypatch.setenv("MINIENC_DEVICE", "gpu0")
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        minienc.get_device()
    minienc.set_device("cpu")
    assert minienc.get_device() == "cpu"


def test_manual_seed_reproduces_every_generator(device):
    minienc.manual_seed(123)
    first = backend.to_host(backend.rng(device).standard_normal(5))
    host_first = backend.host_rng().random(3)
    minienc.manual_seed(123)
    assert np.array_equal(backend.to_host(backend.rng(device).standard_normal(5)), first)
    assert np.array_equal(backend.host_rng().random(3), host_first)
    minienc.manual_seed(124)
    assert not np.array_equal(backend.to_host(backend.rng(device).standard_normal(5)), first)


def test_rng_state_round_trips():
    minienc.manual_seed(5)
    state = backend.get_rng_state()
    draws = backend.host_rng().random(4)
    backend.set_rng_state(state)
    assert np.array_equal(backend.host_rng().random(4), draws)


def test_scatter_add_accumulates_repeated_indices(device):
    xp = backend.xp_for(device)
    target = xp.zeros(4, dtype=xp.float32)
    backend.scatter_add(target, xp.asarray([0, 2, 0, 0]), xp.asarray([1.0, 2.0, 3.0, 4.0], dtype=xp.float32))
    assert backend.to_host(target).tolist() == [8.0, 0.0, 2.0, 0.0]
    table = xp.zeros((3, 2), dtype=xp.float32)
    backend.scatter_add(table, (xp.asarray([1, 1]), slice(None)), xp.ones((2, 2), dtype=xp.float32))
    assert backend.to_host(table).tolist() == [[0, 0], [2, 2], [0, 0]]


def test_float32_is_the_default():
    assert backend.DEFAULT_DTYPE == np.float32
    assert backend.is_floating("float16") and not backend.is_floating("int32")


# ----- only backend.py names numpy or cupy ---------------------------------------------------
FORBIDDEN = {"numpy", "cupy", "cupyx"}
ALIASES = {"np", "numpy", "cp", "cupy", "cupyx"}
EXEMPT = ("backend.py", "data")  # host-side data loading may use NumPy (the rule)


def violations(path):
    """Imports of numpy/cupy by name, and uses of a bare np/numpy/cp/cupy name. Host-side code
    reaches NumPy as `backend.numpy` (bound to a local name if it likes): visible and greppable,
    unlike an import that computes on the wrong backend unseen."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bound_to_backend = {
        target.id for node in ast.walk(tree) if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Attribute) and node.value.attr == "numpy"
        and isinstance(node.value.value, ast.Name) and node.value.value.id == "backend"
        for target in node.targets if isinstance(target, ast.Name)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in FORBIDDEN]
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] in FORBIDDEN and node.level == 0:
                found.append(f"from {node.module} import ...")
            found += [f"from {'.' * node.level}{node.module or ''} import {a.name}"
                      for a in node.names if a.name in FORBIDDEN]
        elif isinstance(node, ast.Name) and node.id in ALIASES and node.id not in bound_to_backend:
            found.append(f"line {node.lineno}: bare name {node.id}")
    return found


def computing_modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] not in EXEMPT:
            yield relative, path


def test_only_backend_names_numpy_or_cupy():
    bad = {str(rel): v for rel, path in computing_modules() if (v := violations(path))}
    assert not bad, f"numpy/cupy used outside minienc/backend.py (go through backend.get_xp): {bad}"


def test_the_scan_catches_what_it_should(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("import numpy as np\nfrom cupy import asarray\nfrom ..backend import numpy\n"
                       "import cupyx.scipy\ny = np.exp(1)\n")
    assert len(violations(planted)) == 5
    fine = tmp_path / "fine.py"
    fine.write_text("from . import backend\nnp = backend.numpy\nz = np.zeros(3)\nxp = backend.get_xp(z)\n")
    assert violations(fine) == []
    assert len(list(computing_modules())) >= 10  # the scan really walks the package
