"""What one L-BFGS step's vector algebra costs in the probes' torch solver: compact form against two-loop.

    python benchmarks/lbfgs_step.py [--device cuda] [--groups 5] [--features 768] [--classes 100] [--steps 20] [--json]

The probes' solver (cifarbench/eval/softmax_lbfgs.py) keeps the last 10 correction
pairs of every problem and turns the gradient into a step with them each iteration.
It does that in L-BFGS's compact form (`_History`: the pairs as rows of one tensor, the
dot products one batched matrix product, the step another). `TwoLoopHistory` below is
the textbook two-loop recursion it replaced (Nocedal and Wright, algorithm 7.4,
batched: one row per problem, an unused pair has rho = 0), kept here as the baseline
and as the reference tests/test_probe.py checks the compact form against.

Both run the same steps in the same run, alternating which goes first: store a pair
(`add`: its curvature test, the slot, the dot products the next step needs) and make
the next direction, on a batch shaped like a few-shot shot count (`--groups` draws x
13 C values, (features + 1) x classes weights per problem, the default 5 x 13 x
76,900). The pairs come from a fixed positive-definite diagonal Hessian, so every
curvature test passes and all 10 slots fill, as in a long fit. It prints seconds per
step for each side and their ratio (two-loop / compact, above 1: the compact form is
faster), medians over `--rounds`; the device's queue is synchronised before every
clock read. Measured on the 2-core build machine's CPU (one thread), defaults: see
docs/performance.md. The objective (the product with the features) is not in either
side: it is the same in both.
"""

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable as a plain script from a checkout

from cifarbench.eval import softmax_lbfgs  # noqa: E402

C_VALUES = 13  # the default probe.c_grid


class TwoLoopHistory:
    """The two-loop recursion over a ring of HISTORY pairs, with _History's interface (add, restart, direction)."""

    def __init__(self, batch, size, dtype, device):
        m = softmax_lbfgs.HISTORY
        self.s = torch.zeros(m, batch, size, dtype=dtype, device=device)
        self.y = torch.zeros_like(self.s)
        self.rho = torch.zeros(m, batch, dtype=dtype, device=device)  # 0: an unused slot
        self.gamma = torch.ones(batch, dtype=dtype, device=device)
        self.newest = m - 1

    def direction(self, g):
        q = g.clone()
        alphas = []
        m = len(self.rho)
        order = [(self.newest - i) % m for i in range(m)]  # newest first
        for i in order:
            alpha = self.rho[i] * (self.s[i] * q).sum(1)
            q -= alpha[:, None] * self.y[i]
            alphas.append(alpha)
        r = self.gamma[:, None] * q
        for i, alpha in zip(reversed(order), reversed(alphas)):
            beta = self.rho[i] * (self.y[i] * r).sum(1)
            r += self.s[i] * (alpha - beta)[:, None]
        return -r

    def restart(self, rows):
        self.rho = torch.where(rows[None, :], 0.0, self.rho)

    def add(self, s, y, moved, g):
        sy, yy = (s * y).sum(1), (y * y).sum(1)
        keep = moved & (sy > torch.finfo(s.dtype).eps * yy)
        self.newest = (self.newest + 1) % len(self.rho)
        self.s[self.newest] = torch.where(keep[:, None], s, 0.0)
        self.y[self.newest] = torch.where(keep[:, None], y, 0.0)
        self.rho[self.newest] = torch.where(keep, 1.0 / sy.where(keep, 1.0), 0.0)
        self.gamma = torch.where(keep, sy / yy.where(keep, 1.0), self.gamma)
        return keep


def pair_cycle(batch, size, device, seed=0, distinct=3):
    """Endless (s, y, g): steps s, y = A s for a fixed positive diagonal A, and a gradient g, made before the
    clock starts (`distinct` of them, repeated: the cost does not depend on the values)."""
    generator = torch.Generator(device=device).manual_seed(seed)

    def normal():
        return torch.randn(batch, size, generator=generator, dtype=torch.float64, device=device)

    hessian = normal().abs() + 0.1
    made = []
    for _ in range(distinct):
        s = normal()
        made.append((s, hessian * s, normal()))
    return itertools.cycle(made)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(history, pairs, steps, device):
    moved = torch.ones(history.gamma.shape[0], dtype=torch.bool, device=history.gamma.device)
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        s, y, g = next(pairs)
        history.add(s, y, moved, g)
        history.direction(g)
    sync(device)
    return (time.perf_counter() - start) / steps


def measure(device, groups, features, classes, steps, rounds):
    batch, size = groups * C_VALUES, (features + 1) * classes
    sides = {"compact": softmax_lbfgs._History, "two_loop": TwoLoopHistory}
    seconds = {name: [] for name in sides}
    histories = {name: make(batch, size, torch.float64, device) for name, make in sides.items()}
    for history in histories.values():  # warm-up: fill every slot, outside the clock
        time_steps(history, pair_cycle(batch, size, device), softmax_lbfgs.HISTORY, device)
    for r in range(rounds):
        for name in sorted(sides, reverse=r % 2 == 1):
            seconds[name].append(time_steps(histories[name], pair_cycle(batch, size, device, seed=r), steps, device))
    ratios = [two / compact for two, compact in zip(seconds["two_loop"], seconds["compact"])]
    return {
        "device": str(device),
        "batch": batch,
        "weights_per_problem": size,
        "compact_s_per_step": statistics.median(seconds["compact"]),
        "two_loop_s_per_step": statistics.median(seconds["two_loop"]),
        "two_loop_over_compact": statistics.median(ratios),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--groups", type=int, default=5, help="few-shot draws in the batch (each with 13 C values)")
    ap.add_argument("--features", type=int, default=768)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--steps", type=int, default=20, help="steps per round and side")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (the probes' numpy path uses one)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if min(args.groups, args.features, args.classes, args.steps, args.rounds, args.threads) < 1:
        ap.error("--groups, --features, --classes, --steps, --rounds and --threads must be positive")
    torch.set_num_threads(args.threads)
    result = measure(torch.device(args.device), args.groups, args.features, args.classes, args.steps, args.rounds)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['device']}: {result['batch']} problems x {result['weights_per_problem']:,} weights; "
            f"compact {result['compact_s_per_step'] * 1e3:.1f} ms/step, two-loop "
            f"{result['two_loop_s_per_step'] * 1e3:.1f} ms/step, two-loop / compact "
            f"{result['two_loop_over_compact']:.2f}x"
        )


if __name__ == "__main__":
    main()
