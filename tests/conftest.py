"""Every test that takes `device` runs once per backend: cpu always, cuda where CuPy sees a GPU
(skipped with the reason otherwise).

The plain `python -m pytest -q tests` is the whole CI run (.ci/run runs exactly README's command):
the settings it needs are defaults here, not environment variables to remember. Hypothesis runs
the derandomized "ci" profile (HYPOTHESIS_PROFILE=dev draws fresh examples each run), and
matplotlib draws off-screen (Agg; the demos the tests start inherit it)."""
import os
import sys

os.environ.setdefault("MPLBACKEND", "Agg")     # before anything imports matplotlib

import pytest
from hypothesis import HealthCheck, settings

import minienc
from minienc import backend

# the benchmark workloads (benchmarks/) are imported by the GPU-path tests from the checkout
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

settings.register_profile("ci", deadline=None, derandomize=True, max_examples=20,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, max_examples=20,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

_CUDA = backend.cuda_available()
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(
        not _CUDA, reason="no CUDA device visible to CuPy (pip install 'minienc[gpu]' on a GPU machine)")),
]


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(autouse=True)
def _seed():
    minienc.manual_seed(0)
    yield
