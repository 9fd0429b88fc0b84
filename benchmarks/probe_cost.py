"""What the linear probe costs: fit_probe over the default C grid and the default few-shot curve, in seconds.

    python benchmarks/probe_cost.py [--fraction 0.25] [--threads 1] [--cold] [--skip-full] [--skip-fewshot] [--json]
    python benchmarks/probe_cost.py --backend torch --device cuda      # the GPU path (probe.backend: torch)
    python benchmarks/probe_cost.py --backend array-api --device cuda  # scikit-learn's own torch path, to compare
    python benchmarks/probe_cost.py --solvers lbfgs,newton-cg,sag,saga --solver-size 3000 --solver-tol 1e-4

Three sizes of synthetic features (real features need trained models; the cost
depends on the sizes, the conditioning and how separable the classes are, not
on where the numbers came from):

- demo: 1,300 training x 512 features (ResNet-18's width), 10 classes, 150
  validation images, as the demo's CIFAR-10 slot gives;
- demo100: 2,250 x 512, 100 classes, 250 validation images, the demo's
  CIFAR-100 slot (22-23 images per class: its few-shot curve stops at 10 shots);
- full: 45,000 training x 768 (ViT-B/14's width), 100 classes, 5,000
  validation images (CIFAR-100 after its validation split). `--fraction f`
  fits on f x 45,000 training images and extrapolates the seconds by 1/f:
  an lbfgs iteration costs time about in proportion to the images, and the
  number of iterations grows slowly with them (measured: 1,125 at 11,250
  images, 1,315 at 22,500), so 1/f underestimates a little. The few-shot
  curve does not depend on the fraction: it draws at most 25 images per class.

Features, shaped like a pretrained network's: classes in groups of 5 (as
CIFAR-100's superclasses; CIFAR-10 has vehicles and animals) whose means lie
close together, within-class variation mostly along 64 shared directions plus
a little isotropic noise, uneven scales and offsets per feature, and 5 % of
training labels replaced at random (ambiguous images). The probe then reaches
92-97 % on the full size and 94 % on the demo's (65 % with 22 images for each of
100 classes), not 100 %, and the validation curve over C has a shape.
The few-shot curve runs at the default shots (1, 5, 10, 25) and 5 draws, the
regularisation chosen on the same validation split.

Defaults take ~17 minutes on the 2-core build machine (the full-size fit alone
11-13); `--fraction 0.25` takes ~7.

`--backend` picks the path: `numpy` (scikit-learn on the CPU, the default), `torch`
(cifarbench/eval/softmax_lbfgs.py on `--device`: every C and few-shot draw as one batch), or
`array-api` (scikit-learn 1.9's LogisticRegression on torch tensors under
array_api_dispatch, C after C with warm starts: scipy's L-BFGS-B on the host, the objective
on `--device`; not a pipeline path, measured beside ours). The JSON keys are the same for all.

`--threads N` caps BLAS/OpenMP threads at N during fits (fit_probe's
`threads`; default 1, the library's); `--threads 0` leaves the process's own.
`--cold` also fits each C of the grid from scratch, to show what the warm
starts along the grid save. `--solver` sweeps with another solver;
`--solvers` times one cold fit per solver at one C instead (sag/saga are slow:
keep --solver-size small, and give them --solver-tol 1e-4).
"""

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

if "array-api" in sys.argv:  # scipy reads it once, at import: scikit-learn's torch path needs it
    os.environ["SCIPY_ARRAY_API"] = "1"

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable as a plain script from a checkout

from cifarbench.eval import linear_probe  # noqa: E402

SIZES = {  # name: (training images, features, classes, validation images)
    "demo": (1300, 512, 10, 150),
    "demo100": (2250, 512, 100, 250),
    "full": (45000, 768, 100, 5000),
}
SHOTS = (1, 5, 10, 25)  # fewshot_curve's default; a size with fewer images per class stops earlier
TEST_IMAGES = 2000  # scoring is cheap; enough for a stable accuracy


def unit_rows(rng, rows, d):
    v = rng.normal(size=(rows, d))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def synthetic(n, d, k, seed, label_noise=0.0):
    """(features float32, labels); the class structure depends on (d, k) only, so splits share it."""
    structure = np.random.default_rng([d, k])  # the classes; `seed` only draws the images
    group_means = 10.0 * unit_rows(structure, k // 5 + 1, d)
    means = group_means[np.arange(k) // 5] + 1.5 * unit_rows(structure, k, d)  # 1.5: classes of a group overlap
    directions = unit_rows(structure, 64, d)
    scales, offsets = np.exp(structure.normal(size=d)), structure.normal(size=d)
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % k)  # balanced, as CIFAR is
    x = means[y] + rng.normal(size=(n, 64)) @ directions + 0.3 * rng.normal(size=(n, d))
    noisy = rng.random(n) < label_noise
    y[noisy] = rng.integers(0, k, size=int(noisy.sum()))
    return (x * scales + offsets).astype(np.float32), y


def splits(n, d, k, n_val, n_test=TEST_IMAGES):
    """(train, val, test) of one class structure; 5 % of the training labels are noise (tests use it too)."""
    return (
        synthetic(n, d, k, seed=1, label_noise=0.05),
        synthetic(n_val, d, k, seed=2),
        synthetic(n_test, d, k, seed=3),
    )


class ArrayApiProbe:
    """scikit-learn's LogisticRegression on torch tensors (array_api_dispatch), swept over the grid as fit_probe
    sweeps it (warm starts, ties to the smaller C); the attributes the timing reads."""

    def __init__(self, x, y, vx, vy, device, grid=linear_probe.DEFAULT_C_GRID):
        import sklearn
        import torch
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        self.scaler, self.device = StandardScaler().fit(x), device
        tensor = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64), device=device)  # noqa: E731
        train, val = tensor(self.scaler.transform(x)), tensor(self.scaler.transform(vx))
        with sklearn.config_context(array_api_dispatch=True), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence is read off n_iter below
            model = LogisticRegression(tol=linear_probe.TOL, max_iter=linear_probe.MAX_ITER, warm_start=True)
            self.path, best = [], None
            for c in sorted(grid):
                model.set_params(C=c)
                model.fit(train, torch.as_tensor(y, device=device))
                n_iter = int(model.n_iter_.max())
                val_top1 = float((model.predict(val).cpu().numpy() == vy).mean())
                self.path.append(
                    {"c": c, "val_top1": val_top1, "n_iter": n_iter, "converged": n_iter < linear_probe.MAX_ITER}
                )
                if best is None or val_top1 > best[1]:
                    best = (c, val_top1, model.coef_.cpu().numpy().copy(), model.intercept_.cpu().numpy().copy())
        self.c, self.val_top1, coef, intercept = best
        self.model = linear_probe.SoftmaxModel(coef, intercept, np.unique(y), n_iter=0)
        self.unconverged_c = [e["c"] for e in self.path if not e["converged"]]

    def score(self, x, y):
        return float(np.mean(self.model.predict(self.scaler.transform(x)) == y))


def array_api_curve(x, y, vx, vy, tx, ty, shots, device, draws=5, seed=0):
    """fewshot_curve's draws, each fitted by ArrayApiProbe: the means by shot count."""
    means = {}
    for k in shots:
        top1 = []
        for d in range(draws):
            idx = linear_probe.fewshot_indices(y, k, linear_probe.draw_seed(seed, d))
            top1.append(ArrayApiProbe(x[idx], y[idx], vx, vy, device).score(tx, ty))
        means[str(k)] = float(np.mean(top1))
    return {"fewshot_top1": means, "fewshot_top1_std": {k: None for k in means}, "shots": {}}


def time_probe(name, fraction, threads, cold, fewshot=True, solver=linear_probe.SOLVER, backend="numpy", device="cpu"):
    n, d, k, n_val = SIZES[name]
    n_fit = int(round(n * fraction))
    (x, y), (vx, vy), (tx, ty) = splits(n_fit, d, k, n_val)
    where = {"threads": threads} if backend == "numpy" else {"backend": backend, "device": device}
    start = time.perf_counter()
    if backend == "array-api":
        fitted = ArrayApiProbe(x, y, vx, vy, device)
    else:
        fitted = linear_probe.fit_probe(x, y, vx, vy, solver=solver, **where)
    fit_s = time.perf_counter() - start
    curve, fewshot_s = None, None
    shots = [s for s in SHOTS if s <= np.bincount(y).min()]
    if fewshot:
        start = time.perf_counter()
        if backend == "array-api":
            curve = array_api_curve(x, y, vx, vy, tx, ty, shots, device)
        else:
            curve = linear_probe.fewshot_curve(x, y, vx, vy, tx, ty, shots=shots, **where)
        fewshot_s = round(time.perf_counter() - start, 2)
    iters = [e["n_iter"] for e in fitted.path]
    cold_run = {}
    if cold:  # a one-C grid is a fit from scratch
        start = time.perf_counter()
        cold_iters = [
            linear_probe.fit_probe(x, y, vx, vy, c_grid=(c,), threads=threads).path[0]["n_iter"]
            for c in fitted.val_top1_by_c
        ]
        cold_run = {"cold_fit_s": round(time.perf_counter() - start, 2), "cold_lbfgs_iterations": sum(cold_iters)}
    return {
        "size": name,
        "backend": backend,
        "device": str(device),
        "train": n_fit,
        "full_train": n,
        "features": d,
        "classes": k,
        "val": n_val,
        "fit_probe_s": round(fit_s, 2),
        "fit_probe_s_extrapolated": round(fit_s / fraction, 1),
        "c": fitted.c,
        "val_top1": fitted.val_top1,
        "test_top1": fitted.score(tx, ty),
        "lbfgs_iterations": sum(iters),
        "most_iterations": max(iters),
        "unconverged_c": fitted.unconverged_c,
        "path": [(e["c"], round(e["val_top1"], 4), e["n_iter"]) for e in fitted.path],
        **(
            {}
            if curve is None
            else {
                "fewshot_s": fewshot_s,
                "shots": shots,
                "fewshot_top1": curve["fewshot_top1"],
                "fewshot_top1_std": curve["fewshot_top1_std"],
                "fewshot_unconverged": sum(
                    not r["converged"] for s in curve["shots"].values() for r in s.get("draws", [])
                ),
            }
        ),
        **cold_run,
    }


def time_solvers(solvers, n, c, threads, tol, report):
    """One fit per solver at C=c on n 'full'-shaped images (768 features, 100 classes); `report` gets each row."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    _, d, k, n_val = SIZES["full"]
    (x, y), (vx, vy), _ = splits(n, d, k, n_val)
    scaler = StandardScaler().fit(x)
    x, vx = scaler.transform(x).astype(np.float64), scaler.transform(vx)
    rows = []
    for solver in solvers:
        model = LogisticRegression(C=c, solver=solver, tol=tol, max_iter=linear_probe.MAX_ITER, random_state=0)
        with threadpool_limits(limits=threads), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            start = time.perf_counter()
            model.fit(x, y)
            seconds = time.perf_counter() - start
        rows.append(
            {
                "solver": solver,
                "train": n,
                "c": c,
                "tol": tol,
                "seconds": round(seconds, 2),
                "iterations": int(np.max(model.n_iter_)),
                "val_top1": float(model.score(vx, vy)),
                "warnings": len(caught),
            }
        )
        report(rows[-1])
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--fraction", type=float, default=1.0, help="share of the full size's 45,000 training images to fit"
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=linear_probe.THREADS,
        help="BLAS/OpenMP threads during fits; 0: the process's own",
    )
    ap.add_argument("--cold", action="store_true", help="also fit every C from scratch (no warm start)")
    ap.add_argument("--skip-full", action="store_true", help="time the demo sizes only")
    ap.add_argument("--skip-fewshot", action="store_true", help="time fit_probe only")
    ap.add_argument("--solver", default=linear_probe.SOLVER, help="fit_probe's solver for the timed sweep")
    ap.add_argument(
        "--backend", choices=("numpy", "torch", "array-api"), default="numpy", help="which fitting path to time"
    )
    ap.add_argument("--device", default="cpu", help="the torch device of --backend torch or array-api")
    ap.add_argument("--solvers", help="comma-separated solvers to compare instead (one fit each at --solver-c)")
    ap.add_argument("--solver-size", type=int, default=5000)
    ap.add_argument("--solver-c", type=float, default=0.1)
    ap.add_argument(
        "--solver-tol",
        type=float,
        default=linear_probe.TOL,
        help="sag/saga's tol bounds the change of the weights, not the gradient: 1e-6 can run to max_iter",
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    args = ap.parse_args()
    if not 0 < args.fraction <= 1:
        ap.error("--fraction must be in (0, 1]")
    threads = args.threads or None

    if args.solvers:

        def report(row):
            if not args.json:
                print(
                    f"{row['solver']:>15}: {row['seconds']:7.2f} s, {row['iterations']} iterations, val top-1 "
                    f"{row['val_top1']:.4f} ({row['train']} x 768, 100 classes, C={row['c']:g}, tol={row['tol']:g}), "
                    f"{row['warnings']} warnings",
                    flush=True,
                )

        results = time_solvers(
            args.solvers.split(","), args.solver_size, args.solver_c, threads, args.solver_tol, report
        )
    else:
        runs = [("demo", 1.0), ("demo100", 1.0)] + ([] if args.skip_full else [("full", args.fraction)])
        results = []
        for name, fraction in runs:
            r = time_probe(
                name,
                fraction,
                threads,
                args.cold,
                fewshot=not args.skip_fewshot,
                solver=args.solver,
                backend=args.backend,
                device=args.device,
            )
            results.append(r)
            if not args.json:
                print(
                    f"{name}: {r['train']:,} x {r['features']}, {r['classes']} classes, {r['val']:,} val "
                    f"({threads or 'default'} BLAS threads)"
                )
                extra = "" if fraction == 1 else f" -> {r['fit_probe_s_extrapolated']} s for {r['full_train']:,} images"
                print(
                    f"  fit_probe ({len(r['path'])} C): {r['fit_probe_s']} s{extra}; C={r['c']:.3g}, "
                    f"val {r['val_top1']:.4f}, test {r['test_top1']:.4f}; lbfgs iterations "
                    f"{r['lbfgs_iterations']} (most {r['most_iterations']}), unconverged {r['unconverged_c']}"
                )
                print(
                    "  path (C, val top-1, iterations): " + ", ".join(f"({c:.2g}, {v}, {i})" for c, v, i in r["path"])
                )
                if "fewshot_s" in r:
                    print(
                        f"  fewshot_curve (shots {'/'.join(map(str, r['shots']))}, 5 draws): {r['fewshot_s']} s; means "
                        + ", ".join(
                            f"{s}: {m:.3f}±{r['fewshot_top1_std'][s]:.3f}" for s, m in r["fewshot_top1"].items()
                        )
                        + f"; unconverged fits {r['fewshot_unconverged']}",
                        flush=True,
                    )
                if args.cold:
                    print(
                        f"  cold fits, C by C: {r['cold_fit_s']} s, {r['cold_lbfgs_iterations']} lbfgs iterations "
                        f"(warm-started sweep: {r['lbfgs_iterations']})",
                        flush=True,
                    )
    if args.json:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
