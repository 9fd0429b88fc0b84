"""Linear probe on frozen features: multinomial logistic regression, its C chosen on validation, and few-shot curves.

On (N, D) numpy feature arrays; nothing here knows about models, stages or files.
Every result is JSON-ready (plain floats, ints, lists, dicts). Two backends fit the
same objective to the same tolerance: `numpy`, scikit-learn's LogisticRegression on
the CPU, one C after the other with warm starts (the fastest path on a CPU), and
`torch`, eval/softmax_lbfgs.py on a torch device, every C of the grid (and every
few-shot draw) as one batch (the fast path on a GPU). `backend_for` picks one.
"""

import copy
import dataclasses
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from cifarbench.eval import softmax_lbfgs

# C is scikit-learn's inverse L2 strength on the *sum* of per-image losses, i.e. the
# variance of a Gaussian prior on the weights of standardised features. Its good range
# therefore does not scale with the number of training images, so one grid serves a
# 1-shot probe (10 images) and a full one (45,000). Log-spaced because accuracy varies
# with the order of magnitude of C. Half-decade steps: on the way to its peak validation
# accuracy moves by several points per half decade in the paths measured
# (benchmarks/probe_cost.py prints them), so whole decades can land that far off it;
# finer steps mostly chase validation noise. 1e-4 lies far below the peak in every case
# measured (for small sets it is already the strong-L2 limit: the class-mean rule on
# balanced classes); at 1e2 the penalty barely acts on standardised features. A chosen
# C at either end is flagged (Probe.c_at_grid_edge).
DEFAULT_C_GRID = tuple(float(c) for c in np.logspace(-4, 2, 13))

# lbfgs, measured (benchmarks/probe_cost.py, one thread): over the warm-started sweep it
# is 10-30 % faster than newton-cg at the same accuracy (demo: 1.9 against 2.2 s; 4,500
# x 768, 100 classes: 62 against 69 s); one cold fit on 3,000 x 768, 100 classes takes
# 10.5 s, where sag and saga need 53 and 101 s even at their looser tol of 1e-4 (their
# per-image updates of 100 x 768 weights are slow); newton-cholesky would build a
# (768*100)^2 Hessian (47 GB).
SOLVER = "lbfgs"
# scikit-learn's default tol (1e-4) stops lbfgs early on (nearly) separable training
# sets, which few-shot sets and weakly regularised fits are: the mean loss's gradient is
# tiny while the weights are still far from the optimum (measured on 5,000 x 768
# synthetic features, 100 classes, C=1: validation top-1 0.77 at tol 1e-4 against 0.93
# at the optimum, reached at 1e-6; 1e-8 moves the objective by <1e-5, absolute, for up
# to twice the iterations). tests/test_probe.py checks the objective against newton-cg.
TOL = 1e-6
# Generous: real-sized fits converge in well under this (benchmarks/probe_cost.py prints
# the most iterations any C needed); hitting it is reported, not hidden.
MAX_ITER = 1000
# BLAS/OpenMP threads during fits. One: the probe's matrix products are small (the demo's
# 1,300 x 512 x 10 classes, every few-shot set) or medium, and on a machine whose cores are
# busy, OpenBLAS's default threads wait on each other: on the 2-core build machine with
# other work running, the demo-size sweep took 17-28 s with them against 0.7-2.8 s on one
# thread, its few-shot curve 107 s against 8 s, a 10,000 x 768 x 100 fit 4x longer. One
# thread also gives the same floating-point sums on every machine (the thread count
# changes them: one validation accuracy moved by an image). threads=None keeps the
# process's pools, which can pay off for the full-size fit on an idle many-core machine.
THREADS = 1
BACKENDS = ("numpy", "torch")


def backend_for(setting, device):
    """The backend that `probe.backend: setting` means on `device`: auto is torch on CUDA, numpy elsewhere.

    On a CPU the numpy path is the faster (benchmarks/probe_cost.py); torch's float64 needs CUDA or the CPU
    (Apple's MPS has no float64).
    """
    kind = torch.device(device).type
    if setting == "auto":
        return "torch" if kind == "cuda" else "numpy"
    if setting == "torch" and kind == "mps":
        raise ValueError("the torch backend fits in float64, which Apple's MPS lacks; use auto or numpy")
    return setting


@dataclass
class Probe:
    """A fitted probe: standardisation (fitted on its training features) and the model for the chosen C.

    `path` has one entry per C of the grid (ascending): its validation top-1, lbfgs
    iterations, and whether it converged (with scikit-learn's warning text if not).
    """

    scaler: StandardScaler
    model: LogisticRegression
    c: float
    val_top1: float
    path: list = field(default_factory=list)

    @property
    def val_top1_by_c(self):
        return {entry["c"]: entry["val_top1"] for entry in self.path}

    @property
    def converged(self):
        """Whether the chosen C's fit converged."""
        return next(entry["converged"] for entry in self.path if entry["c"] == self.c)

    @property
    def unconverged_c(self):
        return [entry["c"] for entry in self.path if not entry["converged"]]

    @property
    def c_at_grid_edge(self):
        """Whether the chosen C is the grid's largest, or its smallest and better than the next:
        a wider grid might win."""
        grid = [entry["c"] for entry in self.path]
        if len(grid) < 2:
            return False
        return self.c == grid[-1] or (self.c == grid[0] and self.path[1]["val_top1"] < self.val_top1)

    def predict(self, x):
        return self.model.predict(self.scaler.transform(_features(x)))

    def score(self, x, y):
        """Top-1 accuracy on features x with labels y."""
        return float(np.mean(self.predict(x) == np.asarray(y)))

    def summary(self):
        """JSON-ready description of the fit (no arrays)."""
        return {
            "c": self.c,
            "val_top1": self.val_top1,
            "converged": self.converged,
            "unconverged_c": self.unconverged_c,
            "c_at_grid_edge": self.c_at_grid_edge,
            "n_features": int(self.model.n_features_in_),
            "n_classes": int(len(self.model.classes_)),
            "path": copy.deepcopy(self.path),
        }


def _features(x):
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"features must be a 2-D (images, dims) array, got shape {x.shape}")
    return x


def _labels(y, n, name):
    y = np.asarray(y)
    if y.shape != (n,):
        raise ValueError(f"{name} must be 1-D with one label per feature row ({n}), got shape {y.shape}")
    return y


def _checked_pair(train_x, train_y, val_x, val_y):
    """The training and validation arrays, checked: 2-D features of one width, one label per row."""
    train_x, val_x = _features(train_x), _features(val_x)
    train_y = _labels(train_y, len(train_x), "train_y")
    val_y = _labels(val_y, len(val_x), "val_y")
    if train_x.shape[1] != val_x.shape[1]:
        raise ValueError(f"train and val features differ in width: {train_x.shape[1]} vs {val_x.shape[1]}")
    return train_x, train_y, val_x, val_y


def _check_grid(c_grid):
    grid = sorted(float(c) for c in c_grid)
    if not grid or not all(np.isfinite(c) and c > 0 for c in grid):
        raise ValueError(f"c_grid must be a non-empty list of positive finite numbers, got {list(c_grid)}")
    if len(set(grid)) != len(grid):
        raise ValueError(f"c_grid has repeated values: {list(c_grid)}")
    return grid


def _fit_quietly(model, x, y):
    """Fit, turning ConvergenceWarnings into a returned message instead of output.

    A grid sweep would otherwise print one warning per C and per few-shot draw; the
    message goes into the probe's path, so non-convergence stays visible in the result.
    Other warnings are passed on unchanged, except one a 1-shot set always triggers.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # one image per class is the design of a 1-shot probe, not a regression target in disguise
        warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
        model.fit(x, y)
    problems = []
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            problems.append(" ".join(str(w.message).split()))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return problems


def fit_probe(
    train_x,
    train_y,
    val_x,
    val_y,
    c_grid=DEFAULT_C_GRID,
    seed=0,
    solver=SOLVER,
    max_iter=MAX_ITER,
    threads=THREADS,
    tol=TOL,
    backend="numpy",
    device="cpu",
):
    """Standardise, fit a multinomial logistic regression per C, keep the C with the best validation top-1.

    Ties go to the smaller C (stronger regularisation: the simpler model the data do
    not argue against). The numpy backend sweeps the grid from small to large C with
    warm starts: each fit starts from the previous, more regularised solution (a
    third fewer lbfgs iterations over the demo-size grid, 864 against 1,322; the
    problem is convex, so the optimum is the same); the torch backend fits every C
    at once on `device`, each from zero.
    `seed` is the solver's random_state; lbfgs is deterministic and ignores it.
    `threads` caps BLAS/OpenMP threads during the fits (None: leave them; see THREADS).
    `tol` and `max_iter`: lbfgs's stopping rule (see TOL); a looser one trades the optimum for time.
    """
    train_x, train_y, val_x, val_y = _checked_pair(train_x, train_y, val_x, val_y)
    grid = _check_grid(c_grid)
    fit = _Fit(grid, solver, max_iter, tol, threads, backend, device)
    return fit.groups([(train_x, train_y)], [(val_x, val_y)], [seed])[0]


@dataclass
class _Fit:
    """How to fit: the C grid, the solver and its stopping rule, the backend and where it runs."""

    grid: list
    solver: str
    max_iter: int
    tol: float
    threads: int | None
    backend: str
    device: object

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.backend == "torch" and self.solver != SOLVER:
            raise ValueError(f"the torch backend is an lbfgs solver; solver={self.solver!r} needs the numpy backend")

    def groups(self, train_sets, val_sets, seeds):
        """One Probe per (train_x, train_y) of train_sets, each scored on its (val_x, val_y) of val_sets."""
        if self.backend == "numpy":
            with threadpool_limits(limits=self.threads):
                return [
                    _sweep(x, y, vx, vy, self.grid, seed, self.solver, self.max_iter, self.tol)
                    for (x, y), (vx, vy), seed in zip(train_sets, val_sets, seeds)
                ]
        classes = [np.unique(y) for _, y in train_sets]
        # one batch needs one set of classes and one size of training and of validation set
        if any(
            not np.array_equal(c, classes[0]) or len(y) != len(train_sets[0][1]) or len(vy) != len(val_sets[0][1])
            for c, (_, y), (_, vy) in zip(classes, train_sets, val_sets)
        ):
            return [self.groups([t], [v], [seed])[0] for t, v, seed in zip(train_sets, val_sets, seeds)]
        return _torch_sweep(train_sets, classes[0], val_sets, self)


def _torch_sweep(train_sets, classes, val_sets, fit):
    """Every C for every training set at once (softmax_lbfgs), on fit.device; the same Probes _sweep makes."""
    scalers = [StandardScaler().fit(x) for x, _ in train_sets]
    device = torch.device(fit.device)

    def stacked(arrays):
        return torch.from_numpy(np.stack([np.asarray(a, dtype=np.float64) for a in arrays])).to(device)

    x = stacked([scaler.transform(x) for scaler, (x, _) in zip(scalers, train_sets)])
    y = torch.from_numpy(np.stack([np.searchsorted(classes, y) for _, y in train_sets])).to(device)
    batch = softmax_lbfgs.fit(x, y, len(classes), [1.0 / c for c in fit.grid], fit.tol, fit.max_iter)
    vx = stacked([scaler.transform(val_x) for scaler, (val_x, _) in zip(scalers, val_sets)])
    vy = torch.from_numpy(np.stack([np.asarray(val_y) for _, val_y in val_sets])).to(device)
    scores = torch.einsum("gnd,ghkd->gnhk", vx, batch.coef) + batch.intercept[:, None]
    predicted = torch.from_numpy(classes).to(device)[scores.argmax(3)]  # (groups, val images, C)
    val_top1 = (predicted == vy[:, :, None]).double().mean(1).cpu()
    coef, intercept = batch.coef.cpu().numpy(), batch.intercept.cpu().numpy()
    probes = []
    for g, scaler in enumerate(scalers):
        path, best = [], None
        for h, c in enumerate(fit.grid):
            problem = batch.message(g, h, fit.tol)
            n_iter = int(batch.n_iter[g, h])
            path.append(
                {
                    "c": c,
                    "val_top1": float(val_top1[g, h]),
                    "n_iter": n_iter,
                    "converged": problem is None and n_iter < fit.max_iter,
                    "warning": problem,
                }
            )
            if best is None or path[-1]["val_top1"] > path[best]["val_top1"]:  # ties keep the smaller C
                best = h
        model = SoftmaxModel(coef[g, best], intercept[g, best], classes, n_iter=path[best]["n_iter"])
        probes.append(Probe(scaler=scaler, model=model, c=fit.grid[best], val_top1=path[best]["val_top1"], path=path))
    return probes


class SoftmaxModel:
    """A fitted multinomial logistic regression as the probe uses one: scikit-learn's attributes and predict."""

    def __init__(self, coef, intercept, classes, n_iter):
        self.coef_, self.intercept_, self.classes_ = coef, intercept, np.asarray(classes)
        self.n_features_in_ = coef.shape[1]
        self.n_iter_ = np.array([n_iter])

    def predict(self, x):
        return self.classes_[np.argmax(np.asarray(x, dtype=np.float64) @ self.coef_.T + self.intercept_, axis=1)]


def _sweep(train_x, train_y, val_x, val_y, grid, seed, solver, max_iter, tol):
    scaler = StandardScaler().fit(train_x)
    # lbfgs works in float64: convert once here, not once per C inside scikit-learn
    x = np.ascontiguousarray(scaler.transform(train_x), dtype=np.float64)
    vx = np.ascontiguousarray(scaler.transform(val_x), dtype=np.float64)

    model = LogisticRegression(solver=solver, tol=tol, max_iter=max_iter, warm_start=True, random_state=seed)
    path, best = [], None
    for c in grid:
        model.set_params(C=c)
        problems = _fit_quietly(model, x, train_y)
        n_iter = int(np.max(model.n_iter_))
        val_top1 = float(model.score(vx, val_y))
        path.append(
            {
                "c": c,
                "val_top1": val_top1,
                "n_iter": n_iter,
                "converged": not problems and n_iter < max_iter,
                "warning": problems[0] if problems else None,
            }
        )
        if best is None or val_top1 > best[1]:  # strictly better: ties keep the smaller C
            best = (c, val_top1, copy.deepcopy(model))
    c, val_top1, chosen = best
    return Probe(scaler=scaler, model=chosen, c=c, val_top1=val_top1, path=path)


def fewshot_indices(labels, shots, seed):
    """Indices of exactly `shots` images per class, sorted, drawn with numpy's Generator from `seed`.

    Each class's images are permuted and the first `shots` taken, so for one seed the
    draws are nested (the 1-shot images are among the 5-shot ones, ...): a few-shot
    curve then measures what more labels add, not which images a draw happened to get.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if isinstance(shots, bool) or not isinstance(shots, (int, np.integer)) or shots < 1:
        raise ValueError(f"shots must be a positive integer, got {shots!r}")
    classes = _check_enough(labels, shots)
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:shots] for c in classes]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def _check_enough(labels, shots):
    """The sorted classes, after checking each has at least `shots` images (else ValueError naming them)."""
    classes, counts = np.unique(labels, return_counts=True)
    short = counts < shots
    if short.any():  # summarised: a 100-class list would not fit a terminal line
        raise ValueError(
            f"{shots}-shot draw needs {shots} images per class; {int(short.sum())} of {len(classes)} classes "
            f"have fewer (as few as {int(counts.min())}, e.g. class {classes[short][0]})"
        )
    return classes


def draw_seed(seed, draw):
    """The seed of draw number `draw`: independent streams from (seed, draw), as numpy recommends."""
    return int(np.random.SeedSequence([seed, draw]).generate_state(1)[0])


def _check_shots(shots):
    shots = list(shots)
    if not shots or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in shots):
        raise ValueError(f"shots must be a non-empty list of positive integers, got {shots}")
    if len(set(shots)) != len(shots):
        raise ValueError(f"shots has repeated values: {shots}")
    return [int(k) for k in shots]


# How a k-shot probe's C is chosen (probe.fewshot_c). "shots": from the k labelled images per class
# alone, by cross-validation over them, so a k-shot number has seen k labels per class; "validation":
# on the full validation split, as linear-probe papers usually do (an optimistic bound: that split
# holds far more labels than k shots).
FEWSHOT_C_RULES = ("shots", "validation")
CV_FOLDS = 5  # folds of the shots' cross-validation (k folds below 5 shots: one shot per class each)


def cv_folds(labels, shots):
    """Fold number of each of a draw's images: within each class, its images in index order dealt round-robin
    into min(shots, CV_FOLDS) folds, so every fold holds out at most ceil(shots / folds) < shots images of a
    class and every class stays in every fold's training set."""
    labels = np.asarray(labels)
    folds = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        folds[members] = np.arange(len(members)) % min(shots, CV_FOLDS)
    return folds


def _choose_c_on_shots(fit, shot_sets, shots, seeds):
    """Per draw, the C with the best cross-validated top-1 over its shots (ties: the smaller C), and that
    accuracy. At 1 shot no image is left to validate on: the grid's smallest C, the strong-regularisation
    limit, where the probe is the class-mean rule on standardised features (accuracy None)."""
    if shots == 1:
        return [(fit.grid[0], None)] * len(shot_sets)
    n_folds = min(shots, CV_FOLDS)
    train_sets, val_sets, owners = [], [], []
    for d, (x, y) in enumerate(shot_sets):
        folds = cv_folds(y, shots)
        for f in range(n_folds):
            held = folds == f
            train_sets.append((x[~held], y[~held]))
            val_sets.append((x[held], y[held]))
            owners.append(d)
    fitted = fit.groups(train_sets, val_sets, [seeds[d] for d in owners])
    hits = np.zeros((len(shot_sets), len(fit.grid)))
    for d, probe, (_, vy) in zip(owners, fitted, val_sets):
        hits[d] += [entry["val_top1"] * len(vy) for entry in probe.path]
    accuracy = hits / np.array([len(y) for _, y in shot_sets])[:, None]
    best = accuracy.argmax(axis=1)  # the first maximum: ties keep the smaller C
    return [(fit.grid[b], float(accuracy[d, b])) for d, b in enumerate(best)]


def fewshot_curve(
    train_x,
    train_y,
    val_x,
    val_y,
    test_x,
    test_y,
    shots=(1, 5, 10, 25),
    draws=5,
    seed=0,
    c_grid=DEFAULT_C_GRID,
    threads=THREADS,
    tol=TOL,
    max_iter=MAX_ITER,
    backend="numpy",
    device="cpu",
    c_from="shots",
):
    """Test top-1 of probes trained on `shots` labelled images per class, `draws` random draws each.

    c_from: how each probe's C is chosen (FEWSHOT_C_RULES): "shots", cross-validation over the draw's
    own shots (cv_folds; at 1 shot the grid's smallest C, see _choose_c_on_shots), or "validation",
    the best on the full validation split (val_x, val_y; unused with "shots").
    Returns {"fewshot_top1": {"1": mean, ...}, "fewshot_top1_std": {...},
    "shots": {"1": {"mean", "std", "draws": [{"draw", "seed", "top1", "c", "val_top1",
    "converged"}, ...]}, ...}, "draws", "seed", "c_grid", "c_from", "cv_folds", "correct"}. `val_top1` is
    the chosen C's cross-validated (or validation) top-1, None at 1 shot with "shots". `std` is the sample
    standard deviation over draws (ddof=1), None for a single draw. "correct" is not JSON: per shot count a
    (draws, test images) bool array, each draw's per-image correctness, for intervals. Draw d uses
    draw_seed(seed, d) for every shot count, so its draws are nested across shots. The torch backend fits
    a shot count's draws (and every C, and every fold) as one batch.
    """
    shots = _check_shots(shots)
    if isinstance(draws, bool) or not isinstance(draws, (int, np.integer)) or draws < 1:
        raise ValueError(f"draws must be a positive integer, got {draws!r}")
    if c_from not in FEWSHOT_C_RULES:
        raise ValueError(f"c_from must be one of {', '.join(FEWSHOT_C_RULES)}, got {c_from!r}")
    train_x, train_y, val_x, val_y = _checked_pair(train_x, train_y, val_x, val_y)
    test_x = _features(test_x)
    test_y = _labels(test_y, len(test_x), "test_y")
    grid = _check_grid(c_grid)
    _check_enough(train_y, max(shots))  # fail before any fitting, not after the small shot counts
    seeds = [draw_seed(seed, d) for d in range(draws)]

    fit = _Fit(grid, SOLVER, max_iter, tol, threads, backend, device)
    per_shot, correct = {}, {}
    for k in shots:
        draws_k = [fewshot_indices(train_y, k, s) for s in seeds]
        shot_sets = [(train_x[idx], train_y[idx]) for idx in draws_k]
        if c_from == "validation":
            fitted = fit.groups(shot_sets, [(val_x, val_y)] * draws, seeds)
        else:
            chosen = _choose_c_on_shots(fit, shot_sets, k, seeds)
            fitted = [
                dataclasses.replace(fit, grid=[c]).groups([shots_d], [shots_d], [s])[0]
                for (c, _), shots_d, s in zip(chosen, shot_sets, seeds)
            ]
            for probe, (_, accuracy) in zip(fitted, chosen):
                probe.val_top1 = accuracy
        hits = np.stack([probe.predict(test_x) == test_y for probe in fitted])
        runs = [
            {
                "draw": d,
                "seed": s,
                "top1": float(hits[d].mean()),
                "c": probe.c,
                "val_top1": probe.val_top1,
                "converged": probe.converged,
            }
            for d, (s, probe) in enumerate(zip(seeds, fitted))
        ]
        top1 = [r["top1"] for r in runs]
        per_shot[str(k)] = {
            "mean": float(np.mean(top1)),
            "std": float(np.std(top1, ddof=1)) if draws > 1 else None,
            "draws": runs,
        }
        correct[str(k)] = hits
    return {
        "fewshot_top1": {k: v["mean"] for k, v in per_shot.items()},
        "fewshot_top1_std": {k: v["std"] for k, v in per_shot.items()},
        "shots": per_shot,
        "draws": int(draws),
        "seed": int(seed),
        "c_grid": grid,
        "c_from": c_from,
        "cv_folds": CV_FOLDS,
        "correct": correct,
    }
