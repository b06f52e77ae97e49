"""The transports under minienc.distributed: one small class per engine, the same few calls.

    allreduce_(a)           a <- the sum over ranks of a, in place; every rank gets the sum
    broadcast_(a, root)     a <- root's a, in place
    allgather(a)            (W * n, ...): every rank's a (n, ...), stacked in rank order
    reduce_scatter(a)       a (W * n, ...) summed over ranks; this rank keeps rows [r n, (r + 1) n)
    bcast_object(value) / allgather_object(value)     small host Python values (pickled)

`WorldOfOne`   one process and no launcher: every call hands its input back (a no-op).
`MPIEngine`    NumPy arrays through mpi4py's buffer calls (the capitalised ones: no pickling of
               arrays, the data goes straight from the array's memory).
`NCCLEngine`   CuPy arrays through NCCL (cupy.cuda.nccl), enqueued on the current CUDA stream
               with device pointers: no host copy and no host sync, so a collective is ordered
               with the kernels around it as any other kernel is. NCCL starts from a unique id
               made on rank 0 and sent to the others over MPI (as ChainerMN and PyTorch's
               launchers do); host values go over that MPI link too.

Every collective is numbered and watched (minienc/distributed/watchdog.py): one that waits
past a timeout, or for a rank that has left, ends the job with a line naming the rank and the
operation. MPI's are watched while the host waits in them; NCCL's, which the host never waits
in, by the CUDA event recorded behind each on its stream, and an asynchronous error NCCL reports
ends the job at once. `allgather` first gathers every rank's shape (a small host collective,
over MPI for NCCL too) and refuses shapes that differ, naming each rank's.

Only `MPIEngine` imports mpi4py, and only `make_nccl_engine` asks backend.nccl() for
cupy.cuda.nccl, when one is made.
NOTE: NCCLEngine has run only against a fake in the tests (no GPU where it was written), its
watch on the GPU against stand-in events; see docs/distributed.md for the check on one GPU.
"""
from .. import backend

np = backend.numpy


def _import_mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise RuntimeError(f"minienc.distributed needs mpi4py and an MPI library: "
                           f"pip install 'minienc[distributed]' (mpi4py and the mpich wheel) "
                           f"({exc})") from None
    return MPI


class WorldOfOne:
    """A single process: the sum over one rank, the gather of one rank, are its own array."""
    name, rank, size = "none", 0, 1

    def allreduce_(self, a):
        return a

    def broadcast_(self, a, root=0):
        return a

    def allgather(self, a):
        return a

    def reduce_scatter(self, a):
        return a

    def bcast_object(self, value, root=0):
        return value

    def allgather_object(self, value):
        return [value]

    def barrier(self):
        pass


def _contiguous(a, op):
    if not a.flags.c_contiguous:
        raise ValueError(f"distributed.{op}: works in place on a contiguous array, got a view of "
                         f"shape {tuple(a.shape)}")
    return a


def _split_rows(engine, a, op):
    if a.ndim == 0 or a.shape[0] % engine.size:
        raise ValueError(f"{op}: an array of shape {tuple(a.shape)} does not split into "
                         f"{engine.size} equal blocks of rows")
    return a.shape[0] // engine.size


MAX_DIMS = 64   # NumPy's limit on ndim: a shape travels as one fixed-size row of integers


def _shape_row(a):
    row = np.full(2 + MAX_DIMS, -1, dtype=np.int64)
    row[0], row[1] = a.ndim, ord(a.dtype.char)
    row[2:2 + a.ndim] = a.shape
    return row


def _describe(row):
    return f"{tuple(int(n) for n in row[2:2 + row[0]])} {np.dtype(chr(row[1])).name}"


class _Unwatched:
    """The watch of a world of one: nobody to wait for."""
    count = 0

    def watch(self, op):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class MPIEngine:
    """Collectives over MPI on host NumPy arrays (the CPU engine), each watched (see the module
    docstring); timeout: seconds a collective may wait (None: watchdog.timeout_from())."""
    name = "mpi"

    def __init__(self, comm=None, timeout=None):
        self.MPI = _import_mpi()
        self.comm = comm if comm is not None else self.MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        from .watchdog import Watchdog, timeout_from
        timeout = timeout_from(timeout)
        self.watchdog = Watchdog(self.comm, timeout) if self.size > 1 else _Unwatched()

    def _check(self, a, op, in_place=False):
        if backend.is_cupy(a):
            raise TypeError(f"distributed.{op}: the MPI engine moves host arrays, got a CuPy "
                            f"array of shape {tuple(a.shape)} on cuda; init(engine='nccl') "
                            f"trains on GPUs")
        if in_place:
            return _contiguous(a, op)
        return np.ascontiguousarray(a)

    def allreduce_(self, a):
        a = self._check(a, "allreduce_", True)
        with self.watchdog.watch("allreduce_"):
            self.comm.Allreduce(self.MPI.IN_PLACE, a, op=self.MPI.SUM)
        return a

    def broadcast_(self, a, root=0):
        a = self._check(a, "broadcast_", True)
        with self.watchdog.watch("broadcast_"):
            self.comm.Bcast(a, root=root)
        return a

    def allgather(self, a):
        a = self._check(a, "allgather")
        if a.ndim == 0:
            raise ValueError("distributed.allgather: stacks arrays along axis 0; got a 0-d array")
        with self.watchdog.watch("allgather"):
            self.agree_on_shape(a, "all_gather")
            out = np.empty((self.size * a.shape[0],) + a.shape[1:], dtype=a.dtype)
            self.comm.Allgather(a, out)
        return out

    def agree_on_shape(self, a, op):
        """Every rank's shape and dtype of `a` (one small Allgather); a ValueError on every rank,
        naming each rank's, where they differ (a gather of unequal blocks would hand back
        memory nobody wrote)."""
        mine = _shape_row(a)
        rows = np.empty((self.size, mine.size), dtype=np.int64)
        self.comm.Allgather(mine, rows)
        if (rows != mine).any():
            shapes = ", ".join(f"rank {r}: {_describe(row)}" for r, row in enumerate(rows))
            raise ValueError(f"distributed.{op}: every rank must give an array of the same shape "
                             f"and dtype, got {shapes} (pad to the largest first dimension, or "
                             f"gather the sizes first)")

    def reduce_scatter(self, a):
        a = self._check(a, "reduce_scatter")
        n = _split_rows(self, a, "distributed.reduce_scatter")
        out = np.empty((n,) + a.shape[1:], dtype=a.dtype)
        with self.watchdog.watch("reduce_scatter"):
            self.comm.Reduce_scatter_block(a, out, op=self.MPI.SUM)
        return out

    def bcast_object(self, value, root=0):
        with self.watchdog.watch("bcast_object"):
            return self.comm.bcast(value, root=root)

    def allgather_object(self, value):
        with self.watchdog.watch("allgather_object"):
            return self.comm.allgather(value)

    def barrier(self):
        with self.watchdog.watch("barrier"):
            self.comm.Barrier()

    def abort(self, code=1):
        """End every rank's process (MPI_Abort), a moment after the last message."""
        from .watchdog import abort
        abort(self.comm, code)

    def local_rank(self):
        """This process's index among the processes on its machine (picks its GPU)."""
        with self.watchdog.watch("local_rank"):
            return self.comm.Split_type(self.MPI.COMM_TYPE_SHARED).Get_rank()


# numpy dtype name -> the name of NCCL's constant in cupy.cuda.nccl
NCCL_TYPES = {"float16": "NCCL_FLOAT16", "float32": "NCCL_FLOAT32", "float64": "NCCL_FLOAT64",
              "int8": "NCCL_INT8", "uint8": "NCCL_UINT8", "int32": "NCCL_INT32",
              "int64": "NCCL_INT64", "bool": "NCCL_UINT8"}


def _pointer(a):
    """The address of an array's first element: CuPy's device pointer (a NumPy array's host
    address lets the tests drive this engine with a fake NCCL)."""
    return a.data.ptr if backend.is_cupy(a) else a.ctypes.data


def _stream(a):
    return backend.cupy().cuda.get_current_stream().ptr if backend.is_cupy(a) else 0


class NCCLEngine:
    """Collectives over NCCL on CuPy arrays (the GPU engine), one GPU per process.

    rank, size, unique_id: this process's place and NCCL's id from rank 0 (`nccl.get_unique_id()`).
    nccl: the cupy.cuda.nccl module (or a stand-in with the same calls). host: the engine that
    carries host values (an MPIEngine; None for a world of one). record_event: () -> an event
    recorded on the current stream, with `.done` (the tests' stand-in; default: CUDA's)."""
    name = "nccl"

    def __init__(self, rank, size, unique_id, nccl, host=None, record_event=None):
        self.nccl, self.rank, self.size = nccl, rank, size
        self.host = host if host is not None else WorldOfOne()
        self.comm = nccl.NcclCommunicator(size, unique_id, rank)
        # NCCL's collectives are counted with the host's (so a rank that leaves before one is
        # found) and, returning once enqueued, each is followed by the event behind it
        self.watchdog = getattr(self.host, "watchdog", None) or _Unwatched()
        self.record_event = record_event or _record_cuda_event
        if hasattr(self.comm, "check_async_error"):
            self.watchdog.device_errors = self.comm.check_async_error

    def _begin(self, a, op):
        """NCCL's type for `a`, in the collective `op` about to be enqueued (counted with the
        host's collectives: see __init__)."""
        name = NCCL_TYPES.get(a.dtype.name)
        if name is None:
            raise TypeError(f"distributed.{op}: NCCL has no type for {a.dtype} (shape "
                            f"{tuple(a.shape)}); it moves {sorted(NCCL_TYPES)}")
        self.watchdog.count += 1
        return getattr(self.nccl, name)

    def _enqueued(self, op):
        if not isinstance(self.watchdog, _Unwatched):   # a world of one waits for nobody
            self.watchdog.enqueued(op, self.record_event())

    def allreduce_(self, a):
        if a.dtype == bool:
            raise TypeError("distributed.allreduce_: cannot sum booleans; cast them first")
        _contiguous(a, "allreduce_")
        self.comm.allReduce(_pointer(a), _pointer(a), a.size, self._begin(a, "allreduce_"),
                            self.nccl.NCCL_SUM, _stream(a))
        self._enqueued("allreduce_")
        return a

    def broadcast_(self, a, root=0):
        _contiguous(a, "broadcast_")
        self.comm.bcast(_pointer(a), a.size, self._begin(a, "broadcast_"), root, _stream(a))
        self._enqueued("broadcast_")
        return a

    def allgather(self, a):
        xp = backend.get_xp(a)
        a = xp.ascontiguousarray(a)
        if a.ndim == 0:
            raise ValueError("distributed.allgather: stacks arrays along axis 0; got a 0-d array")
        if hasattr(self.host, "agree_on_shape"):   # host metadata over MPI: no device sync
            with self.host.watchdog.watch("allgather (shapes)"):
                self.host.agree_on_shape(a, "all_gather")
        out = xp.empty((self.size * a.shape[0],) + a.shape[1:], dtype=a.dtype)
        self.comm.allGather(_pointer(a), _pointer(out), a.size, self._begin(a, "allgather"),
                            _stream(a))
        self._enqueued("allgather")
        return out

    def reduce_scatter(self, a):
        xp = backend.get_xp(a)
        a = xp.ascontiguousarray(a)
        n = _split_rows(self, a, "distributed.reduce_scatter")
        out = xp.empty((n,) + a.shape[1:], dtype=a.dtype)
        self.comm.reduceScatter(_pointer(a), _pointer(out), out.size,
                                self._begin(a, "reduce_scatter"), self.nccl.NCCL_SUM, _stream(a))
        self._enqueued("reduce_scatter")
        return out

    def bcast_object(self, value, root=0):
        return self.host.bcast_object(value, root)

    def allgather_object(self, value):
        return self.host.allgather_object(value)

    def barrier(self):
        backend.cupy().cuda.get_current_stream().synchronize()
        self.host.barrier()

    def abort(self, code=1):
        if hasattr(self.host, "abort"):
            self.host.abort(code)


def _record_cuda_event():
    """A CUDA event recorded on the current stream: done when the work enqueued before it is."""
    event = backend.cupy().cuda.Event(block=False, disable_timing=True)
    event.record()
    return event


def make_nccl_engine(host=None):
    """An NCCLEngine for this process: its GPU chosen by its place on the machine, NCCL's id made
    on rank 0 and broadcast over `host` (an MPIEngine; None: a world of one on the current GPU)."""
    gpu, nccl = backend.cupy(), backend.nccl()
    rank, size = (host.rank, host.size) if host is not None else (0, 1)
    if host is not None:
        # one GPU per process: the i-th process on a machine takes its i-th GPU
        gpu.cuda.Device(host.local_rank() % gpu.cuda.runtime.getDeviceCount()).use()
    unique_id = nccl.get_unique_id() if rank == 0 else None
    if host is not None:
        unique_id = host.bcast_object(unique_id)
    return NCCLEngine(rank, size, unique_id, nccl, host)
