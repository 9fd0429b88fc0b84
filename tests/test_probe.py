"""The linear probe on features whose answer is known, and the few-shot sampler's draws."""

import json
import math
import sys
import warnings

import numpy as np
import pytest
from conftest import ROOT
from scipy.special import softmax
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.preprocessing import StandardScaler

from cifarbench.eval import linear_probe


def clusters(rng, per_class, means, noise=1.0):
    """Gaussian clusters around `means` (one row per class), `per_class` images each, in a shuffled order."""
    labels = rng.permutation(np.repeat(np.arange(len(means)), per_class))
    return (means[labels] + noise * rng.normal(size=(len(labels), means.shape[1]))).astype(np.float32), labels


def first_best_c(fitted):
    """The smallest C among those with the highest validation top-1, read off the probe's path."""
    best = max(entry["val_top1"] for entry in fitted.path)
    return min(entry["c"] for entry in fitted.path if entry["val_top1"] == best)


@pytest.fixture(scope="module")
def separable():
    # 10 classes in 32-D, class means 12 apart along their own axis, unit noise:
    # the margin is ~6 standard deviations, so a linear classifier separates them all
    rng = np.random.default_rng(0)
    means = 6.0 * np.sqrt(2) * np.eye(10, 32)
    return [clusters(rng, n, means) for n in (40, 20, 50)]  # train, val, test


def test_separable_clusters_reach_full_accuracy(separable):
    (x, y), (vx, vy), (tx, ty) = separable
    fitted = linear_probe.fit_probe(x, y, vx, vy)
    assert fitted.score(tx, ty) == 1.0
    assert fitted.val_top1 == 1.0
    # many C reach 100 % here: the tie goes to the smallest of them, not to the last fitted
    assert fitted.c == first_best_c(fitted) < max(linear_probe.DEFAULT_C_GRID)
    assert fitted.converged and fitted.unconverged_c == [] and not fitted.c_at_grid_edge
    assert [entry["c"] for entry in fitted.path] == sorted(linear_probe.DEFAULT_C_GRID)


def test_shuffled_labels_reach_chance(separable):
    rng = np.random.default_rng(1)
    (x, y), (vx, vy), (tx, ty) = separable
    fitted = linear_probe.fit_probe(x, rng.permutation(y), vx, rng.permutation(vy))
    # every split's labels shuffled on its own: they are independent of the predictions,
    # so the number right is Binomial-like with p = 1/10; allow 4 standard deviations
    accuracy = fitted.score(tx, rng.permutation(ty))
    assert abs(accuracy - 0.1) < 4 * math.sqrt(0.1 * 0.9 / len(ty))
    # and at every C on validation: a probe that saw the validation labels would memorise them
    for val_top1 in fitted.val_top1_by_c.values():
        assert abs(val_top1 - 0.1) < 4 * math.sqrt(0.1 * 0.9 / len(vy))


def test_standardisation_makes_the_probe_blind_to_feature_scale(separable):
    (x, y), (vx, vy), (tx, ty) = separable
    # wildly different offsets and scales per feature, as real networks' features have
    scale = np.logspace(-3, 3, x.shape[1])
    offset = np.linspace(-1e3, 1e3, x.shape[1])
    plain = linear_probe.fit_probe(x, y, vx, vy, c_grid=(1e-2, 1.0))
    skewed = linear_probe.fit_probe(x * scale + offset, y, vx * scale + offset, vy, c_grid=(1e-2, 1.0))
    assert skewed.c == plain.c
    assert np.mean(skewed.predict(tx * scale + offset) == plain.predict(tx)) > 0.99
    np.testing.assert_allclose(skewed.scaler.mean_, (x * scale + offset).mean(axis=0), rtol=1e-5)  # train only


def test_heavy_regularisation_wins_when_class_means_are_the_best_rule():
    # Isotropic Gaussian classes: the Bayes rule is the nearest class mean, which is what
    # strong L2 converges to on balanced classes; weak regularisation adds the noise of
    # 200 weights fitted on 20 images per class.
    rng = np.random.default_rng(3)
    means = 0.3 * rng.normal(size=(10, 200))
    (x, y), (vx, vy) = clusters(rng, 20, means), clusters(rng, 300, means)
    fitted = linear_probe.fit_probe(x, y, vx, vy, c_grid=(1e2, 1e-3))  # any order: the grid is sorted
    assert fitted.c == 1e-3 and fitted.c_at_grid_edge
    by_c = fitted.val_top1_by_c
    assert by_c[1e-3] > by_c[1e2] + 0.01
    # the kept model is the chosen C's (the sweep warm-starts one estimator up to C=100)
    assert fitted.model.C == 1e-3
    assert fitted.score(vx, vy) == fitted.val_top1


def test_heavy_regularisation_loses_when_the_answer_is_a_difference_of_features():
    # x1 = class sign + big shared noise z, x2 = z + a little noise: x1 - x2 gives the class
    # almost exactly, but x2's class means are equal, so the class-mean rule (strong L2)
    # sees only x1 and its noise.
    rng = np.random.default_rng(4)

    def data(n):
        y = rng.integers(0, 2, size=n)
        z = 3.0 * rng.normal(size=n)
        return np.column_stack([2.0 * y - 1.0 + z, z + 0.1 * rng.normal(size=n)]), y

    (x, y), (vx, vy), (tx, ty) = data(400), data(1000), data(1000)
    fitted = linear_probe.fit_probe(x, y, vx, vy, c_grid=(1e-3, 1e2))
    assert fitted.c == 1e2 and fitted.c_at_grid_edge
    assert fitted.val_top1_by_c[1e-3] < 0.75
    assert fitted.score(tx, ty) > 0.99


def test_weakly_regularised_fit_reaches_the_optimum():
    # 30 images per class in 64-D are separable: the loss's gradient gets tiny long before
    # the weights settle, where scikit-learn's default tol (1e-4) stops 5 % above the optimum
    rng = np.random.default_rng(8)
    (x, y) = clusters(rng, 30, 0.5 * rng.normal(size=(10, 64)))
    fitted = linear_probe.fit_probe(x, y, x, y, c_grid=(100.0,))
    scaled = fitted.scaler.transform(x).astype(np.float64)

    def objective(model):  # scikit-learn's, divided by the number of images
        return log_loss(y, model.predict_proba(scaled)) + (model.coef_**2).sum() / (2 * 100.0 * len(y))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # newton-cg's line search complains at this tol; its optimum is fine
        reference = LogisticRegression(C=100.0, solver="newton-cg", tol=1e-10, max_iter=1000).fit(scaled, y)
    assert objective(fitted.model) == pytest.approx(objective(reference), rel=1e-3)


def test_non_convergence_is_reported_not_printed(separable):
    (x, y), (vx, vy), _ = separable
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fitted = linear_probe.fit_probe(x, y, vx, vy, c_grid=(1.0, 10.0), max_iter=2)
    assert not [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert not fitted.converged
    assert fitted.unconverged_c == [1.0, 10.0]
    assert all("iter" in entry["warning"].lower() for entry in fitted.path)
    summary = fitted.summary()
    assert json.loads(json.dumps(summary)) == summary and summary["converged"] is False


def test_bad_inputs_are_refused(separable):
    (x, y), (vx, vy), _ = separable
    with pytest.raises(ValueError, match="c_grid"):
        linear_probe.fit_probe(x, y, vx, vy, c_grid=(0.0, 1.0))
    with pytest.raises(ValueError, match="train_y"):
        linear_probe.fit_probe(x, y[:-1], vx, vy)
    with pytest.raises(ValueError, match="width"):
        linear_probe.fit_probe(x, y, vx[:, :5], vy)


# ---- few-shot sampler ----

UNEVEN = np.random.default_rng(5).permutation(np.repeat([2, 5, 9, 11], [7, 40, 12, 25]))  # labels with gaps


@pytest.mark.parametrize("shots", [1, 5, 7])
def test_fewshot_indices_draw_exactly_k_per_class(shots):
    idx = linear_probe.fewshot_indices(UNEVEN, shots, seed=0)
    assert len(np.unique(idx)) == len(idx) == 4 * shots  # no duplicates
    assert idx.min() >= 0 and idx.max() < len(UNEVEN)
    assert np.all(np.diff(idx) > 0)  # sorted
    classes, counts = np.unique(UNEVEN[idx], return_counts=True)
    assert classes.tolist() == [2, 5, 9, 11] and counts.tolist() == [shots] * 4


def test_fewshot_indices_depend_on_the_seed_only():
    same = [linear_probe.fewshot_indices(UNEVEN, 5, seed=s) for s in (0, 0, 1)]
    np.testing.assert_array_equal(same[0], same[1])
    assert not np.array_equal(same[0], same[2])
    # one seed's draws are nested: more shots add images, never swap them
    assert set(linear_probe.fewshot_indices(UNEVEN, 1, seed=3)) <= set(linear_probe.fewshot_indices(UNEVEN, 5, seed=3))


def test_fewshot_indices_summarise_the_classes_that_are_too_small():
    with pytest.raises(
        ValueError,
        match=r"^20-shot draw needs 20 images per class; 2 of 4 classes have fewer "
        r"\(as few as 7, e\.g\. class 2\)$",
    ):
        linear_probe.fewshot_indices(UNEVEN, 20, seed=0)
    hundred = np.repeat(np.arange(100), 5)  # 100 classes: the message stays one short line
    with pytest.raises(ValueError) as caught:
        linear_probe.fewshot_indices(hundred, 25, seed=0)
    assert len(str(caught.value)) < 120 and "100 of 100 classes" in str(caught.value)
    with pytest.raises(ValueError, match="shots"):
        linear_probe.fewshot_indices(UNEVEN, 0, seed=0)


def test_fewshot_curve_reports_every_draw_and_grows_with_shots():
    # overlapping clusters: one image per class is a poor guess of its mean, 25 a good one
    rng = np.random.default_rng(6)
    means = 0.45 * rng.normal(size=(10, 32))
    (x, y), (vx, vy), (tx, ty) = (clusters(rng, n, means) for n in (30, 30, 100))
    grid = linear_probe.DEFAULT_C_GRID[::2]
    curve = linear_probe.fewshot_curve(x, y, vx, vy, tx, ty, shots=(1, 5, 25), draws=3, seed=7, c_grid=grid)
    correct = curve.pop("correct")  # per draw and test image, for the intervals: not for a JSON file
    assert json.loads(json.dumps(curve)) == curve  # JSON-ready
    assert curve["c_from"] == "shots"
    assert list(curve["shots"]) == list(curve["fewshot_top1"]) == ["1", "5", "25"]
    for key, per_shot in curve["shots"].items():
        draws = per_shot["draws"]
        assert [d["draw"] for d in draws] == [0, 1, 2]
        assert len({d["seed"] for d in draws}) == 3
        top1 = [d["top1"] for d in draws]
        assert per_shot["mean"] == pytest.approx(np.mean(top1)) == curve["fewshot_top1"][key]
        assert per_shot["std"] == pytest.approx(np.std(top1, ddof=1)) == curve["fewshot_top1_std"][key]
        assert all(d["c"] in curve["c_grid"] and d["converged"] for d in draws)
        assert correct[key].shape == (3, len(ty)) and list(correct[key].mean(axis=1)) == top1
    means = [curve["fewshot_top1"][k] for k in ("1", "5", "25")]
    assert means[0] + 0.1 < means[1] < means[2]
    # each draw is the sampler's draw for its seed, fitted at its chosen C: refitting one reproduces its accuracy
    draw = curve["shots"]["5"]["draws"][1]
    idx = linear_probe.fewshot_indices(y, 5, draw["seed"])
    again = linear_probe.fit_probe(x[idx], y[idx], vx, vy, c_grid=(draw["c"],))
    assert again.score(tx, ty) == draw["top1"]


def test_fewshot_c_comes_from_the_shots_alone_unless_validation_is_asked_for():
    """By default a k-shot probe's C is the best of a cross-validation over its own k shots (5 folds, k below 5;
    the grid's smallest C at 1 shot): validation labels shuffled change nothing. probe.fewshot_c: validation
    chooses on the validation split, and shuffling its labels then moves the choice."""
    rng = np.random.default_rng(6)
    means = 0.45 * rng.normal(size=(10, 32))
    (x, y), (vx, vy), (tx, ty) = (clusters(rng, n, means) for n in (30, 30, 100))
    grid = linear_probe.DEFAULT_C_GRID[::2]
    kwargs = dict(shots=(1, 3, 10), draws=2, seed=3, c_grid=grid)
    curve = linear_probe.fewshot_curve(x, y, vx, vy, tx, ty, **kwargs)
    shuffled = rng.permutation(vy)
    assert linear_probe.fewshot_curve(x, y, vx, shuffled, tx, ty, **kwargs)["shots"] == curve["shots"]
    assert all(d["c"] == grid[0] and d["val_top1"] is None for d in curve["shots"]["1"]["draws"])
    # the 10-shot choice, made by hand: 5 folds of 2 images per class, each fit on the other 8
    draw = curve["shots"]["10"]["draws"][0]
    idx = linear_probe.fewshot_indices(y, 10, draw["seed"])
    folds = linear_probe.cv_folds(y[idx], 10)
    assert sorted(np.bincount(folds)) == [20] * 5
    hits = np.zeros(len(grid))
    for f in range(5):
        held = folds == f
        fitted = linear_probe.fit_probe(x[idx][~held], y[idx][~held], x[idx][held], y[idx][held], c_grid=grid)
        hits += [entry["val_top1"] * held.sum() for entry in fitted.path]
    assert draw["c"] == grid[int(np.argmax(hits))] and draw["val_top1"] == pytest.approx(hits.max() / len(idx))
    # on the validation split: its labels decide, so shuffling them moves a choice
    on_val = linear_probe.fewshot_curve(x, y, vx, vy, tx, ty, c_from="validation", **kwargs)
    on_noise = linear_probe.fewshot_curve(x, y, vx, shuffled, tx, ty, c_from="validation", **kwargs)
    assert on_val["c_from"] == "validation"
    chosen = [[d["c"] for d in c["shots"][k]["draws"]] for c in (on_val, on_noise) for k in ("1", "3", "10")]
    assert chosen[:3] != chosen[3:]
    with pytest.raises(ValueError, match="c_from must be one of shots, validation"):
        linear_probe.fewshot_curve(x, y, vx, vy, tx, ty, c_from="test", **kwargs)


def test_fewshot_curve_with_one_draw_has_no_spread_and_refuses_too_many_shots(separable):
    # 1 shot of 30 classes: scikit-learn warns when over 20 images have more classes than half
    # their number, as every 1-shot set of over 20 classes has; that is the design, not news
    rng = np.random.default_rng(9)
    means = 8.0 * np.eye(30, 32)
    (x, y), (vx, vy), (tx, ty) = (clusters(rng, n, means) for n in (2, 2, 2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        curve = linear_probe.fewshot_curve(x, y, vx, vy, tx, ty, shots=(1,), draws=1, c_grid=(0.1, 1.0))
    assert [str(w.message) for w in caught] == []
    assert curve["fewshot_top1_std"] == {"1": None} and len(curve["shots"]["1"]["draws"]) == 1
    (x, y), (vx, vy), (tx, ty) = separable
    with pytest.raises(ValueError, match="50-shot"):
        linear_probe.fewshot_curve(x, y, vx, vy, tx, ty, shots=(1, 50), draws=1, c_grid=(1.0,))


# ---- the torch backend (eval/softmax_lbfgs.py): the same probes as the numpy one ----


@pytest.fixture(scope="module")
def overlapping():
    """Features shaped like a network's (benchmarks/probe_cost.py's generator): 10 classes in groups of 5,
    uneven scales and offsets, 5 % noisy training labels; validation top-1 over C peaks at C=0.32 (0.7400),
    5 of 2,000 validation images above the next C."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import probe_cost

    return probe_cost.splits(1000, 64, 10, 2000, n_test=800)


def test_torch_backend_chooses_the_same_c_and_agrees_on_top1(overlapping):
    (x, y), (vx, vy), (tx, ty) = overlapping
    grid = linear_probe.DEFAULT_C_GRID
    numpy_probe = linear_probe.fit_probe(x, y, vx, vy, c_grid=grid)
    torch_probe = linear_probe.fit_probe(x, y, vx, vy, c_grid=grid, backend="torch", device="cpu")
    # the validation curve peaks inside the grid, above its neighbours: the choice is the data's
    by_c = numpy_probe.val_top1_by_c
    assert numpy_probe.c == pytest.approx(0.316, rel=0.01) and sorted(by_c.values())[-1] > sorted(by_c.values())[-2]
    assert torch_probe.c == numpy_probe.c
    assert abs(torch_probe.score(tx, ty) - numpy_probe.score(tx, ty)) <= 0.002
    for ours, theirs in zip(torch_probe.path, numpy_probe.path):  # every C of the path, not just the chosen one
        assert ours["c"] == theirs["c"] and ours["converged"] and theirs["converged"]
        assert abs(ours["val_top1"] - theirs["val_top1"]) <= 0.002
    summary = torch_probe.summary()
    assert json.loads(json.dumps(summary)) == summary
    assert summary["n_features"] == 64 and summary["n_classes"] == 10


def objective(model, scaled, y, c):
    """scikit-learn's objective of a fitted model, divided by the number of images."""
    scores = scaled @ model.coef_.T + model.intercept_
    return log_loss(y, softmax(scores, axis=1), labels=np.unique(y)) + (model.coef_**2).sum() / (2 * c * len(y))


def test_torch_backend_reaches_scikit_learns_optimum(overlapping):
    (x, y), (vx, vy), _ = overlapping
    scaled = StandardScaler().fit(x).transform(x).astype(np.float64)
    for c in (1e-3, 1.0, 100.0):
        ours = linear_probe.fit_probe(x, y, vx, vy, c_grid=(c,), backend="torch", device="cpu").model
        theirs = linear_probe.fit_probe(x, y, vx, vy, c_grid=(c,)).model
        assert objective(ours, scaled, y, c) == pytest.approx(objective(theirs, scaled, y, c), rel=1e-7, abs=1e-9)


def test_torch_backend_fewshot_curve_matches_numpys(overlapping):
    (x, y), (vx, vy), (tx, ty) = overlapping
    grid = linear_probe.DEFAULT_C_GRID[::3]
    kwargs = dict(shots=(1, 5, 20), draws=3, seed=4, c_grid=grid)
    numpy_curve = linear_probe.fewshot_curve(x, y, vx, vy, tx, ty, **kwargs)
    torch_curve = linear_probe.fewshot_curve(x, y, vx, vy, tx, ty, backend="torch", device="cpu", **kwargs)
    assert torch_curve.keys() == numpy_curve.keys() and torch_curve["c_grid"] == numpy_curve["c_grid"]
    for shot, per_shot in numpy_curve["shots"].items():
        for ours, theirs in zip(torch_curve["shots"][shot]["draws"], per_shot["draws"]):
            assert (ours["draw"], ours["seed"]) == (theirs["draw"], theirs["seed"]) and ours["converged"]
            # A draw of 5 or 20 images per class in 64-D is separable: at large C the objective is flat
            # near its optimum and two solvers stop (at the same gradient tol) where one or two
            # validation images (of 2,000) differ, so where validation top-1 ties within that, either C is right
            assert ours["c"] == theirs["c"] or abs(ours["val_top1"] - theirs["val_top1"]) <= 0.0011
        assert abs(torch_curve["fewshot_top1"][shot] - numpy_curve["fewshot_top1"][shot]) <= 0.002


def test_torch_backend_reports_non_convergence_and_refuses_what_it_cannot_do(separable):
    (x, y), (vx, vy), _ = separable
    fitted = linear_probe.fit_probe(x, y, vx, vy, c_grid=(1.0, 10.0), max_iter=2, backend="torch")
    assert not fitted.converged and fitted.unconverged_c == [1.0, 10.0]
    assert all("max_iter" in entry["warning"] and entry["n_iter"] == 2 for entry in fitted.path)
    with pytest.raises(ValueError, match="backend must be one of numpy, torch"):
        linear_probe.fit_probe(x, y, vx, vy, backend="jax")
    with pytest.raises(ValueError, match="numpy backend"):
        linear_probe.fit_probe(x, y, vx, vy, backend="torch", solver="newton-cg")


def test_compact_lbfgs_step_is_the_two_loop_recursions():
    """softmax_lbfgs._History (compact form) against the two-loop recursion it replaced, through a history that
    fills, wraps around, skips a pair that fails the curvature test, skips a problem that did not move, and
    forgets one problem's pairs on a restart."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import lbfgs_step

    from cifarbench.eval import softmax_lbfgs

    batch, size = 4, 30
    generator = torch.Generator().manual_seed(0)
    hessian = torch.rand(batch, size, generator=generator, dtype=torch.float64) + 0.1
    compact = softmax_lbfgs._History(batch, size, torch.float64, "cpu")
    reference = lbfgs_step.TwoLoopHistory(batch, size, torch.float64, "cpu")
    for step in range(softmax_lbfgs.HISTORY + 7):
        s = torch.randn(batch, size, generator=generator, dtype=torch.float64)
        y = hessian * s
        if step == 3:
            y[1] = -s[1]  # negative curvature: problem 1 stores no pair this step
        moved = torch.tensor([True, True, step != 5, True])  # problem 2 did not move at step 5
        g = torch.randn(batch, size, generator=generator, dtype=torch.float64)
        kept = compact.add(s, y, moved, g)
        assert torch.equal(kept, reference.add(s, y, moved, g))
        assert bool(kept[1]) == (step != 3) and bool(kept[2]) == (step != 5)
        if step == 12:
            restart = torch.tensor([False, False, False, True])
            compact.restart(restart)
            reference.restart(restart)
            # problem 3 has forgotten its pairs: its step is the scaled steepest descent, the others' are not
            steepest = -compact.gamma[:, None] * g
            direction = compact.direction(g)
            assert torch.allclose(direction[3], steepest[3]) and not torch.allclose(direction[0], steepest[0])
        assert torch.allclose(compact.direction(g), reference.direction(g), rtol=1e-9, atol=1e-12), f"step {step}"


def test_backend_for_takes_torch_on_cuda_only():
    assert linear_probe.backend_for("auto", "cuda") == "torch"
    assert linear_probe.backend_for("auto", "cuda:1") == "torch"
    assert linear_probe.backend_for("auto", "cpu") == "numpy"
    assert linear_probe.backend_for("auto", "mps") == "numpy"
    assert linear_probe.backend_for("torch", "cpu") == "torch"
    assert linear_probe.backend_for("numpy", "cuda") == "numpy"
    with pytest.raises(ValueError, match="MPS"):
        linear_probe.backend_for("torch", "mps")
