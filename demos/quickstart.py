"""The smallest complete training run: a two-layer network fits y = sin(3x) with plain SGD,
written with nothing but minienc tensors, so every step of the loop is visible.

    python demos/quickstart.py

The same loop, with an objective that makes its own training signal, is what every other
demo runs through minienc.train.Trainer (see minienc/objectives/protocol.py)."""
import numpy as np

import minienc
from common import DemoParser   # argparse that refuses --steps 0 or --device cuda without CuPy in one line


def main():
    parser = DemoParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--device", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    device = args.device or minienc.get_device()
    minienc.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    x = rng.uniform(-1, 1, size=(256, 1)).astype(np.float32)
    y = np.sin(3 * x) + 0.05 * rng.standard_normal(x.shape).astype(np.float32)
    x, y = minienc.tensor(x, device=device), minienc.tensor(y, device=device)
    hidden = 64
    w1 = minienc.tensor(rng.standard_normal((1, hidden)), requires_grad=True, device=device)
    b1 = minienc.tensor(np.zeros(hidden), requires_grad=True, device=device)
    w2 = minienc.tensor(rng.standard_normal((hidden, 1)) / hidden ** 0.5, requires_grad=True, device=device)
    b2 = minienc.tensor(np.zeros(1), requires_grad=True, device=device)
    params = [w1, b1, w2, b2]
    for step in range(args.steps + 1):
        prediction = (x @ w1 + b1).tanh() @ w2 + b2
        loss = minienc.mse_loss(prediction, y)
        for p in params:
            p.zero_grad()
        loss.backward()
        with minienc.no_grad():                  # an update in place, outside the graph
            for p in params:
                p -= 0.1 * p.grad
        if step % 50 == 0:
            print(f"step {step:4d}  loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
