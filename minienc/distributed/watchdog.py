"""No rank waits forever: the watch kept over every collective of the MPI and NCCL engines.

A collective returns only when every rank has joined it. A rank that never joins (it left, or
it waits in another collective, or it is stuck) would leave the others waiting, and MPICH waits
by spinning a core, until someone kills the job. As PyTorch's process groups do, minienc bounds
the wait and names who is waiting for what:

    timeout   a collective that has waited longer than `timeout` seconds (600 by default, as
              PyTorch's; distributed.init(timeout=) or MINIENC_DISTRIBUTED_TIMEOUT) ends the job
              (MPI_Abort) with a line naming this rank, the operation and its number.
    leaving   a process that ends (its script returns, sys.exit, an uncaught SystemExit) says
              so first, from an atexit hook: it sends every other rank the number of
              collectives it finished, then waits, asleep, until every rank has ended too (for
              as long as they take: rank 0 may evaluate and plot for many minutes after the
              others have finished). A rank that has called more collectives than a departed
              rank finished is waiting for a rank that will never come: it ends the job at once,
              naming both. (An uncaught exception already aborts every rank: see init().)

NCCL's collectives (the GPU engine) are enqueued on the GPU and return at once, so the host
never waits inside one: each is numbered with the host's and watched by the CUDA event recorded
behind it on its stream (as PyTorch's NCCL watchdog does). The thread drops the finished ones
(an event query: no sync), and one still unfinished `timeout` seconds after it was enqueued ends
the job the same way; an asynchronous error NCCL reports (a peer that failed) ends it at once.

The collectives are numbered as they are called; every rank calls the same ones in the same
order (the premise of data parallelism), so the numbers agree. A daemon thread wakes every
`poll` seconds to read the goodbyes and the clock (mpi4py starts MPI with
MPI_THREAD_MULTIPLE and releases the GIL inside a blocking call); the collective itself pays
two attribute writes. The goodbyes travel on a duplicate of the communicator, apart from the
collectives and from any message of the user's.
"""
import atexit
import collections
import os
import sys
import threading
import time

DEFAULT_TIMEOUT = 600.0
TIMEOUT_VARIABLE = "MINIENC_DISTRIBUTED_TIMEOUT"
GOODBYE = 29    # the tag of a departing rank's message
ABORT_DELAY = 0.5   # seconds between the last message and MPI_Abort


def timeout_from(value=None):
    """`value` seconds, else MINIENC_DISTRIBUTED_TIMEOUT, else DEFAULT_TIMEOUT; checked > 0."""
    where = "distributed.init: timeout"
    if value is None:
        text = os.environ.get(TIMEOUT_VARIABLE)
        if text is None:
            return DEFAULT_TIMEOUT
        where = f"{TIMEOUT_VARIABLE}={text!r}"
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{where}: must be a number of seconds") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or \
            value == float("inf"):
        raise ValueError(f"{where} must be a finite number of seconds > 0, got {value!r}")
    return float(value)


class Watchdog:
    """Numbers and watches the collectives of one communicator (see the module docstring):
    `with watchdog.watch("allreduce_"): comm.Allreduce(...)`."""

    def __init__(self, comm, timeout=None, poll=None):
        from mpi4py import MPI
        self.MPI, self.world = MPI, comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.timeout = timeout_from(timeout)
        self.poll = poll if poll is not None else min(0.5, self.timeout / 10)
        self.control = comm.Dup()       # (collective: every rank makes its watchdog together)
        self.count = 0                  # collectives called so far
        self.current = None             # (number, operation, start time) while in one
        self.departed = {}              # rank -> collectives it finished before its process ended
        self.in_flight = collections.deque()   # NCCL's: (number, operation, enqueued at, event)
        self.device_errors = None       # NCCL's check for an asynchronous error (raises one)
        self._op = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="minienc-distributed-watchdog",
                                        daemon=True)
        self._thread.start()
        atexit.register(self.leave)

    # ----- around each collective (the hot path: keep it to a few attribute writes) ------------
    def watch(self, op):
        self._op = op
        return self

    def __enter__(self):
        self.count += 1
        if self.departed:
            self._check_departed()
        self.current = (self.count, self._op, time.monotonic())
        return self

    def __exit__(self, *exc):
        self.current = None
        return False

    def enqueued(self, op, event):
        """An NCCL collective, numbered already, was just enqueued; it has finished when `event`
        (recorded behind it on its stream) is done."""
        self.in_flight.append((self.count, op, time.monotonic(), event))

    # ----- the watching thread -----------------------------------------------------------------
    def _watch(self):
        while not self._stop.wait(self.poll):
            self._read_goodbyes()
            if self.departed:
                self._check_departed()
            current, now = self.current, time.monotonic()
            if current is not None and now - current[2] > self.timeout:
                number, op, started = current
                self._abort_overdue(f"rank {self.rank} has waited {now - started:.0f} s in {op} "
                                    f"(collective #{number}) for the other ranks")
            oldest = self._oldest_in_flight()
            if oldest is not None and now - oldest[2] > self.timeout:
                number, op, started, _ = oldest
                self._abort_overdue(f"rank {self.rank}'s {op} (collective #{number}) has not "
                                    f"finished on the GPU {now - started:.0f} s after it was "
                                    f"enqueued: it waits for the other ranks")
            if self.device_errors is not None:
                self._check_device_errors()

    def _oldest_in_flight(self):
        """The oldest NCCL collective not yet finished, after dropping the finished ones (the
        main thread only appends, this thread only pops: a deque does both safely)."""
        while self.in_flight and self.in_flight[0][3].done:
            self.in_flight.popleft()
        return self.in_flight[0] if self.in_flight else None

    def _abort_overdue(self, what):
        self._abort(f"{what}, past the timeout of {self.timeout:g} s (distributed.init(timeout=) "
                    f"or {TIMEOUT_VARIABLE}): another rank is stuck, or the ranks call different "
                    f"collectives")

    def _check_device_errors(self):
        try:
            self.device_errors()
        except Exception as error:   # whatever NCCL's binding raises, the job cannot go on
            self._abort(f"rank {self.rank}: NCCL reports an error in a collective "
                        f"({type(error).__name__}: {error}); another rank has failed")

    def _read_goodbyes(self):
        status = self.MPI.Status()
        while self.control.Iprobe(source=self.MPI.ANY_SOURCE, tag=GOODBYE, status=status):
            source = status.Get_source()
            self.departed[source] = self.control.recv(source=source, tag=GOODBYE)

    def _check_departed(self):
        for rank, finished in sorted(self.departed.items()):
            if self.count > finished:
                current = self.current
                doing = (f"waits in {current[1]} (collective #{current[0]})" if current
                         else f"has called {self.count} collectives")
                self._abort(f"rank {rank} has left (its process ended: the end of its script, "
                            f"sys.exit or SystemExit) after {finished} collectives, but rank "
                            f"{self.rank} {doing}: the ranks did not run the same steps "
                            f"(a check that failed on one rank only, an out_dir on some ranks "
                            f"only, data of different lengths?)")

    def _abort(self, message):
        print(f"minienc.distributed: {message}. Ending every rank.", file=sys.stderr, flush=True)
        abort(self.world)


    # ----- this process ends --------------------------------------------------------------------
    def leave(self):
        """Tell every other rank how many collectives this one finished, then wait (asleep, with
        no timeout: a rank still working is not waiting on this one, and one stuck in a
        collective this one never joins is ended by its own watchdog) until every rank has
        ended."""
        if self._stop.is_set() or self.MPI.Is_finalized():
            return
        sent = [self.control.isend(self.count, dest=r, tag=GOODBYE)
                for r in range(self.size) if r != self.rank]
        everyone = self.control.Ibarrier()
        pause = 0.001
        while not everyone.Test():
            time.sleep(pause)
            pause = min(2 * pause, 0.05)
        self._stop.set()
        self._thread.join()
        for rank in range(self.size):     # every goodbye was sent before the barrier
            if rank != self.rank and rank not in self.departed:
                self.departed[rank] = self.control.recv(source=rank, tag=GOODBYE)
        self.MPI.Request.Waitall(sent)


def abort(comm, code=1):
    """MPI_Abort on `comm`, a moment after the message before it: the launcher tears the job
    down at once, and could drop a line it has not yet passed on."""
    time.sleep(ABORT_DELAY)
    comm.Abort(code)
