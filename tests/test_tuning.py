"""minienc.tuning: the process-wide settings the demos and the benchmark choose at start-up."""
import pytest

from minienc import tuning
from minienc.kernels import threads


@pytest.fixture(autouse=True)
def _restore_threads():
    previous = tuning.get_threads()
    yield
    tuning.set_threads(previous)


def test_set_threads_sizes_blas_and_the_pool():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    tuning.set_threads(2)
    assert threads.get_threads() == 2 and tuning.get_threads() == 2
    blas = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    assert blas and set(blas) == {2}
    tuning.set_threads(1)
    assert threads.get_threads() == 1


def test_the_probe_picks_one_of_the_candidates_and_leaves_the_setting_alone():
    tuning.set_threads(1)
    best, timings = tuning.choose_threads(candidates=(1, 2), repeats=1)
    assert best in (1, 2) and set(timings) == {1, 2} and all(t > 0 for t in timings.values())
    assert best == tuning.fastest_threads(timings)      # the rule below decides, on the timings it reports
    assert tuning.get_threads() == 1


@pytest.mark.parametrize("timings, best", [
    ({1: 1.00, 2: 0.96}, 1),            # 4% faster: not worth a second core
    ({1: 1.00, 2: 0.94}, 2),            # 6% faster: taken
    ({1: 1.00, 2: 1.30}, 1),            # slower (a busy machine): one thread
    ({2: 0.50, 1: 1.00, 4: 0.49}, 2),   # order does not matter; 4 is only 2% better than 2
    ({1: 1.00, 2: 0.80, 4: 0.60}, 4),   # each step up clearly faster
    ({1: 1.00, 2: 0.99, 4: 0.90}, 4),   # compared with the best so far, not the neighbour
    ({3: 0.7}, 3),                      # one candidate
])
def test_the_probe_takes_more_threads_only_when_they_are_at_least_5_percent_faster(timings, best):
    assert tuning.fastest_threads(timings) == best


def test_the_allocator_tuning_takes_effect_on_glibc():
    import platform
    took = tuning.tune_host_allocator()
    assert took is (platform.libc_ver()[0] == "glibc")
