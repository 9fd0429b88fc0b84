"""The linear probe on features whose answer is known, and the few-shot sampler's draws."""

import json
import math
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

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
    assert json.loads(json.dumps(curve)) == curve  # JSON-ready
    assert list(curve["shots"]) == list(curve["fewshot_top1"]) == ["1", "5", "25"]
    for key, per_shot in curve["shots"].items():
        draws = per_shot["draws"]
        assert [d["draw"] for d in draws] == [0, 1, 2]
        assert len({d["seed"] for d in draws}) == 3
        top1 = [d["top1"] for d in draws]
        assert per_shot["mean"] == pytest.approx(np.mean(top1)) == curve["fewshot_top1"][key]
        assert per_shot["std"] == pytest.approx(np.std(top1, ddof=1)) == curve["fewshot_top1_std"][key]
        assert all(d["c"] in curve["c_grid"] and d["converged"] for d in draws)
    means = [curve["fewshot_top1"][k] for k in ("1", "5", "25")]
    assert means[0] + 0.1 < means[1] < means[2]
    # each draw is the sampler's draw for its seed: rerunning one reproduces its accuracy
    draw = curve["shots"]["5"]["draws"][1]
    idx = linear_probe.fewshot_indices(y, 5, draw["seed"])
    again = linear_probe.fit_probe(x[idx], y[idx], vx, vy, c_grid=grid)
    assert again.score(tx, ty) == draw["top1"] and again.c == draw["c"]


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
