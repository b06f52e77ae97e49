"""A small persistent thread pool for the host fast paths: big elementwise and row-wise work cut
into contiguous chunks, run by the calling thread and the workers together.

NumPy's ufuncs (and einsum) release the GIL while they loop over an array, so two threads running
ufuncs on two halves of an array use two cores; BLAS threads only ever help matrix products.
Chunks are also sized to stay in the core's cache (`CHUNK` elements), so a fused sequence of
in-place steps reads each chunk from memory once, which pays even with one thread.

    threads.for_slices(body, rows, row_size)   # body(slice) over chunks of rows, in parallel

The caller takes chunks too and never waits for a worker that has not started: if the machine is
busy and a worker is not scheduled, the caller simply does its share (it waits only for chunks a
worker is already running). `set_threads(n)` sizes the pool (1: no workers, everything inline);
`minienc.tuning.set_threads` calls it with the BLAS thread count.
"""
import itertools
import os
import queue
import threading

CHUNK = 1 << 18          # elements per chunk: 1 MiB of float32, within a core's L2 or L3 cache

_threads = 1
_workers = []
_jobs = queue.SimpleQueue()


def get_threads():
    return _threads


def set_threads(n):
    """Use `n` threads (the caller and n - 1 workers) for chunked work; 1 runs it all inline."""
    global _threads
    n = max(1, int(n))
    while len(_workers) < n - 1:
        worker = threading.Thread(target=_work_loop, name=f"minienc-kernels-{len(_workers) + 1}",
                                  daemon=True)
        worker.start()
        _workers.append(worker)
    _threads = n


def slices(rows, row_size=1, chunk=None, fixed=False):
    """range(rows) cut into slices of about `chunk` (default CHUNK) elements, rows of `row_size`
    each; with several threads, into at least one slice per thread if each keeps chunk / 8.
    fixed=True: the same slices whatever the thread count (for partial sums that must not
    change with it)."""
    if rows == 0:
        return [slice(0, 0)]
    chunk = chunk or CHUNK
    size = rows * row_size
    count = -(-size // chunk)
    if _threads > 1 and not fixed:
        count = max(count, min(_threads, size // (chunk // 8)))
    count = max(1, min(count, rows))
    step = -(-rows // count)
    return [slice(start, min(start + step, rows)) for start in range(0, rows, step)]


def for_slices(body, rows, row_size=1, chunk=None):
    """body(s) for every s in slices(rows, row_size, chunk), spread over the pool."""
    parts = slices(rows, row_size, chunk)
    if len(parts) == 1:
        body(parts[0])
    else:
        run(lambda i: body(parts[i]), len(parts))


def run(work, count):
    """Call work(i) for every i in range(count), spread over the pool; returns when all are done."""
    if count <= 1 or _threads == 1:
        for i in range(count):
            work(i)
        return
    job = _Job(work, count)
    for _ in range(min(_threads - 1, count - 1)):
        _jobs.put(job)
    job.help()
    job.done.wait()
    if job.error is not None:
        raise job.error


class _Job:
    def __init__(self, work, count):
        self.work, self.count = work, count
        self.next = itertools.count()        # next() on it is atomic under the GIL
        self.left = count
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.error = None

    def help(self):
        """Run chunks until none is left to take."""
        for i in self.next:
            if i >= self.count:
                return
            try:
                self.work(i)
            except BaseException as exc:  # handed to the caller, which re-raises it
                self.error = exc
            with self.lock:
                self.left -= 1
                if self.left == 0:
                    self.done.set()


def _work_loop():
    while True:
        _jobs.get().help()


def default_threads():
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
