"""The smallest complete training run: a two-layer network fits y = sin(3x) with plain SGD,
written with nothing but minienc tensors, so every step of the loop is visible.

    python demos/quickstart.py
    mpiexec -n 2 python demos/quickstart.py --distributed   # each process fits half the points

With --distributed the loop is data parallel by hand: every process starts from rank 0's
weights, computes the gradient of its own half of the points, and the gradients are averaged
over the processes before the update, so every process takes the same step."""
import numpy as np

import minienc
from common import DemoParser   # argparse that refuses --steps 0 or --device cuda without CuPy in one line
from minienc import distributed


def main():
    parser = DemoParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--device", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--distributed", action="store_true", help="average the gradients over "
                        "the processes of an MPI launcher (mpiexec -n 2 ...)")
    args = parser.parse_args()
    if args.distributed:
        distributed.init()
    device = args.device or minienc.get_device()
    minienc.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    points = 256
    x = rng.uniform(-1, 1, size=(points, 1)).astype(np.float32)
    y = np.sin(3 * x) + 0.05 * rng.standard_normal(x.shape).astype(np.float32)
    x, y = minienc.tensor(x, device=device), minienc.tensor(y, device=device)
    hidden = 64
    w1 = minienc.tensor(rng.standard_normal((1, hidden)), requires_grad=True, device=device)
    b1 = minienc.tensor(np.zeros(hidden), requires_grad=True, device=device)
    w2 = minienc.tensor(rng.standard_normal((hidden, 1)) / hidden ** 0.5, requires_grad=True, device=device)
    b2 = minienc.tensor(np.zeros(1), requires_grad=True, device=device)
    params = [w1, b1, w2, b2]
    share = slice(distributed.rank() * points // distributed.world_size(),
                  (distributed.rank() + 1) * points // distributed.world_size())
    x, y = x[share], y[share]                    # this process's points (all of them alone)
    distributed.broadcast_parameters(*params)    # rank 0's weights everywhere
    average = distributed.GradientReducer(params)
    for step in range(args.steps + 1):
        prediction = (x @ w1 + b1).tanh() @ w2 + b2
        loss = minienc.mse_loss(prediction, y)
        for p in params:
            p.zero_grad()
        loss.backward()
        average()                                # each .grad <- its mean over the processes
        with minienc.no_grad():                  # an update in place, outside the graph
            for p in params:
                p -= 0.1 * p.grad
        if step % 50 == 0 and distributed.is_main():
            print(f"step {step:4d}  loss {loss.item():.4f}" +
                  (" (rank 0's points)" if distributed.world_size() > 1 else ""))


if __name__ == "__main__":
    main()
