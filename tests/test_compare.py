"""`cifarbench compare`: which differences between two revisions are real, through real DVC experiments.

The unit tests at the top need no DVC: the per-image file's format, the verdict rule, one-sided cells,
the table's width. The rest share one small repo (the tiny ViT alone, on the digits stand-in, one
thread per stage so that a busy machine does not slow it down by 30x, its pipeline cut to what
writes the per-image files compare reads: recipes, download, train, transfer, evaluate): a
`dvc repro` of a 6-epoch recipe, committed on `main` and tagged; an experiment `one` (1 epoch) in the
workspace; a two-value sweep (1 and 2 epochs) queued and run by DVC's queue, whose first experiment
repeats `one` exactly. Experiments re-run only up to `evaluate@...-cifar10-0` (what compare reads), so
their CIFAR-100 cell is the baseline's. Two branches with two training seeds each (6 and 1 epochs)
are built only for the seed-level test.
"""

import csv
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import committed_params, run_here, tiny_params
from dvc_repo import Repo, copy_project, cut_pipeline, run_queue, stages_for
from scipy import stats as sps

from cifarbench import cli, inputs
from cifarbench.commands import compare
from cifarbench.data import dataset
from cifarbench.errors import BenchError
from cifarbench.pipeline import evaluate

VIT = "dinov2_vitb14"
GOOD_EPOCHS = 6  # the baseline's recipe; the experiments' 1 epoch leaves the tiny ViT near chance
TARGET = f"evaluate@{VIT}-cifar10-0"  # what an experiment re-runs: its training and the CIFAR-10 evaluate
PIPELINE = ("recipes", "download", "tune-cifar10", "train-cifar10", "tune-cifar100", "transfer-cifar100", "evaluate")
TRAINED = f"logs/train-cifar10/{VIT}-0/metrics.json"  # the training's DVCLive summary: a metric of every experiment


# ---- no DVC ----------------------------------------------------------------------------------------


def record(predicted, labels, n_classes=10, digest=None):
    digest = digest or dataset.test_digest(np.zeros((len(labels), 2, 2, 3), np.uint8), labels)
    return evaluate.per_image(np.asarray(predicted), np.asarray(predicted) == np.asarray(labels), n_classes, digest)


def test_the_per_image_file_round_trips_and_is_small():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 100, 10_000)
    predicted = np.where(rng.random(10_000) < 0.8, labels, rng.integers(0, 100, 10_000))
    images = rng.integers(0, 256, (10_000, 32, 32, 3), dtype=np.uint8)
    content = evaluate.per_image(predicted, predicted == labels, 100, dataset.test_digest(images, labels))
    text = json.dumps(content, indent=2) + "\n"  # as atomic.write_json writes it
    assert 10_000 < len(text) < 20_000  # 15 kB on the real test split
    back = inputs.per_image(text.encode(), "metrics/per_image/m-cifar100-0.json")
    assert back.predicted.tolist() == predicted.tolist() and back.correct.tolist() == (predicted == labels).tolist()
    assert back.top1 == pytest.approx((predicted == labels).mean()) and back.n_classes == 100
    # the digest covers labels and pixels; 1,000 classes take two bytes each
    assert dataset.test_digest(images, labels) == back.test_digest
    other = images.copy()
    other[0, 0, 0, 0] ^= 1
    assert dataset.test_digest(other, labels) != back.test_digest
    assert dataset.test_digest(images, np.roll(labels, 1)) != back.test_digest
    wide = inputs.per_image(json.dumps(record([999, 3], [999, 4], n_classes=1000)), "x")
    assert wide.predicted.tolist() == [999, 3] and wide.correct.tolist() == [True, False]


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda r: "{not json", "not valid JSON"),
        (lambda r: {**r, "format": "something else"}, "format"),
        (lambda r: {**r, "n_test": 3}, "predicted holds 5 bytes where n_test needs 3"),
        (lambda r: {**r, "predicted": "!!"}, "predicted is not base64"),
        (lambda r: {**r, "predicted": "CQkJCRQ="}, "a predicted class is 20, past n_classes 10"),
        (lambda r: {k: v for k, v in r.items() if k != "test_digest"}, "no test_digest"),
        (lambda r: {**r, "correct": "/w=="}, "correct has bits set past n_test"),
        (lambda r: {**r, "dtype": "float32"}, "dtype"),
    ],
)
def test_a_damaged_per_image_file_is_one_line_naming_it_and_the_fix(damage, problem):
    good = record([1, 2, 3, 4, 5], [1, 2, 0, 4, 0])
    bad = damage(good)
    data = bad if isinstance(bad, str) else json.dumps(bad)
    path = "metrics/per_image/vit-cifar10-0.json"
    with pytest.raises(BenchError) as workspace:
        inputs.per_image(data, path)
    assert str(workspace.value).startswith(f"{path} is damaged (") and problem in str(workspace.value)
    assert "dvc repro -f evaluate@vit-cifar10-0" in str(workspace.value)
    assert f"git checkout {path}" in str(workspace.value)
    with pytest.raises(BenchError) as revision:
        inputs.per_image(data, path, revision="main (1a2b3c4)")
    assert f"{path} at main (1a2b3c4) is damaged" in str(revision.value) and "commit" in str(revision.value)


@pytest.mark.parametrize(
    "diff, first, significant, seeds, expected",
    [
        (0.02, 0.02, True, None, "better"),  # one seed: the image-level test decides
        (-0.02, -0.02, True, None, "worse"),
        (0.02, 0.02, False, None, "inconclusive"),
        (0.02, 0.02, True, True, "better"),  # two seeds a side: both tests must hold
        (0.02, 0.02, True, False, "inconclusive"),
        (-0.02, -0.02, False, True, "inconclusive"),
        (0.02, -0.01, True, True, "inconclusive"),  # McNemar's first seeds point the other way
        (0.0, 0.0, True, None, "inconclusive"),
    ],
)
def test_the_verdict_rule(diff, first, significant, seeds, expected):
    assert compare.verdict(diff, first, significant, seeds) == expected


def runs_of(correct_by_seed, digest="sha256:" + "0" * 64):
    return {
        seed: inputs.PerImage(np.asarray(c, dtype=np.int64), np.asarray(c, dtype=bool), 10, digest)
        for seed, c in correct_by_seed.items()
    }


def synthetic_rows(seeds=(0,), models=("resnet18", "efficientnet_b0", "dinov2_vitb14"), n=10_000):
    rng = np.random.default_rng(1)
    a_cells, b_cells = {}, {}
    for ds in ("cifar10", "cifar100"):
        for i, model in enumerate(models):
            a_cells[(ds, model)] = runs_of({s: rng.random(n) < 0.9 for s in seeds})
            b_cells[(ds, model)] = runs_of({s: rng.random(n) < 0.9 + 0.01 * i for s in seeds})
    a = compare.revisions.Revision("main", "1" * 40)
    b = compare.revisions.Revision(compare.revisions.WORKSPACE)
    return compare.judge(compare.rows_for(a, b, a_cells, b_cells))


@pytest.mark.parametrize("seeds", [(0,), (0, 1, 2)])
def test_the_table_fits_120_columns_for_three_models_and_two_datasets(seeds):
    rows = synthetic_rows(seeds)
    text = compare.as_text(rows)
    assert max(len(line) for line in text.splitlines()) <= 120, text
    assert ("only test-set sampling is accounted for" in text) == (len(seeds) == 1)
    assert ("seeds p" in text) == (len(seeds) > 1)
    assert [r["verdict"] for r in rows if r["model"] == "dinov2_vitb14"] == ["better", "better"]
    assert all(r["verdict"] in compare.VERDICTS for r in rows)
    if len(seeds) > 1:  # seed-level p agrees with scipy on the per-seed top-1s
        row = rows[-1]
        assert row["seed_p"] is not None and row["seed_holm_p"] >= row["seed_p"]
    md = compare.as_text(rows, markdown=True)
    assert md.splitlines()[2].startswith("| dataset | model | top-1 A | top-1 B |")


def side(rng, correct_rate, overconfidence, ood_mean, robust_rate, n=2000, n_out=1500, n_corrupted=500):
    """One run's per-image results, drawn: top-1, how far confidence overshoots it, where the other dataset's
    images score, and the share of corrupted images right in both of 2 runs."""
    correct = rng.random(n) < correct_rate
    confidence = np.clip(correct_rate + overconfidence + rng.normal(0, 0.02, n), 0.01, 1)
    return inputs.PerImage(
        np.zeros(n, dtype=np.int64),
        correct,
        10,
        "sha256:" + "0" * 64,
        confidence=confidence.astype(np.float32),
        ood_scores=np.clip(rng.normal(ood_mean, 0.1, n_out), 0.01, 1).astype(np.float32),
        corruption_index=np.arange(n_corrupted),
        corruption_hits=(rng.random(n_corrupted) < robust_rate).astype(np.int64) * 2,
        corruption_runs=2,
    )


def test_the_other_numbers_are_compared_paired_with_holm_over_their_cells():
    """B calibrates better (ECE down), separates the other dataset better, is more robust and probes better:
    every other number is `better`, each difference inside its interval; A against itself: p 1, inconclusive.
    Files without the arrays (written before them) compare top-1 alone."""
    rng = np.random.default_rng(3)
    a, b = {0: side(rng, 0.7, 0.25, 0.9, 0.4)}, {0: side(rng, 0.7, 0.0, 0.3, 0.6)}
    probe_a = inputs.ProbePerImage(rng.random(2000) < 0.5, "sha256:" + "0" * 64)
    probe_b = inputs.ProbePerImage(rng.random(2000) < 0.7, "sha256:" + "0" * 64)
    rev_a, rev_b = compare.revisions.Revision("main", "1" * 40), compare.revisions.Revision(compare.revisions.WORKSPACE)
    rows = compare.judge(
        compare.rows_for(
            rev_a,
            rev_b,
            {("cifar10", "m"): a},
            {("cifar10", "m"): b},
            {("cifar10", "m"): probe_a},
            {("cifar10", "m"): probe_b},
        )
    )
    others = rows[0]["others"]
    assert list(others) == ["probe_top1", "corruption_top1", "ood_auroc", "ece"]
    assert (
        others["ece"]["diff"] < -0.1 and others["ood_auroc"]["diff"] > 0.2 and others["corruption_top1"]["diff"] > 0.1
    )
    assert others["probe_top1"]["p"] == stats_mcnemar(probe_a.correct, probe_b.correct)
    assert others["ece"]["p"] == pytest.approx(2 / 1001)  # every resample below 0: the least a bootstrap can say
    for name, cell in others.items():
        lo, hi = cell["diff_ci"]
        assert lo < cell["diff"] < hi and cell["holm_p"] < 0.01 and cell["verdict"] == "better", (name, cell)
    same = compare.judge(compare.rows_for(rev_a, rev_b, {("cifar10", "m"): a}, {("cifar10", "m"): a}))
    assert {(c["p"], c["verdict"]) for c in same[0]["others"].values()} == {(1.0, "inconclusive")}
    assert list(same[0]["others"]) == ["corruption_top1", "ood_auroc", "ece"]  # no probe files: no probe row
    old = {0: inputs.PerImage(a[0].predicted, a[0].correct, 10, a[0].test_digest)}
    assert compare.rows_for(rev_a, rev_b, {("cifar10", "m"): old}, {("cifar10", "m"): b})[0]["others"] == {}
    text = compare.as_text(rows)
    assert "Other numbers" in text and max(len(line) for line in text.splitlines()) <= 120, text
    assert json.loads(compare.as_json(rows))[0]["others"]["ece"]["verdict"] == "better"


def stats_mcnemar(a, b):
    from cifarbench.eval import stats

    return stats.mcnemar_exact(a, b)


def test_cells_on_one_side_only_are_listed_as_such():
    a = compare.revisions.Revision("main", "1" * 40)
    b = compare.revisions.Revision("exp", "2" * 40, baseline="1" * 40)
    both = runs_of({0: [1, 0, 1, 1]})
    rows = compare.judge(
        compare.rows_for(
            a,
            b,
            {("cifar10", "resnet18"): both, ("cifar10", "old"): runs_of({0: [1, 1, 1, 1]})},
            {("cifar10", "resnet18"): both, ("cifar100", "new"): runs_of({0: [0, 0, 1, 1]})},
        )
    )
    by_model = {r["model"]: r for r in rows}
    assert by_model["old"]["only_in"] == "a" and by_model["old"]["top1_a"] == 1.0 and by_model["old"]["verdict"] is None
    assert by_model["new"]["only_in"] == "b" and by_model["new"]["top1_b"] == 0.5
    assert by_model["resnet18"]["only_in"] is None and by_model["resnet18"]["holm_p"] == 1.0  # Holm over 1 cell
    text = compare.as_text(rows)
    assert "only in A" in text and "only in B" in text
    assert {"dataset", "model", "top1_a", "top1_b", "diff", "diff_ci", "mcnemar_p", "holm_p", "verdict"} <= set(
        json.loads(compare.as_json(rows))[0]
    )


def test_different_test_sets_are_refused():
    a = compare.revisions.Revision("main", "1" * 40)
    b = compare.revisions.Revision(compare.revisions.WORKSPACE)
    with pytest.raises(BenchError, match="scored different test sets"):
        compare.rows_for(
            a,
            b,
            {("cifar10", "m"): runs_of({0: [1, 0]}, digest="sha256:" + "a" * 64)},
            {("cifar10", "m"): runs_of({0: [1, 0]}, digest="sha256:" + "b" * 64)},
        )


# ---- through DVC -----------------------------------------------------------------------------------


def one_model_params():
    """The tiny params with the tiny ViT alone, on 1,000 stand-in images (334 CIFAR-10 test images)."""
    raw = tiny_params(committed_params(), data__limit=1000, compute__eval_batch_size=256)
    for key in list(raw["models"]):
        if key != VIT:
            del raw["models"][key]
            for section in ("train", "transfer"):
                raw[section].pop(key, None)
    raw["train"][VIT].update(epochs=GOOD_EPOCHS, lr=0.005, warmup_epochs=0)  # warm-up must be under 1 epoch
    return raw


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    path = tmp_path_factory.mktemp("compare")
    copy_project(path)
    cut_pipeline(path, PIPELINE)
    r = Repo(path)
    r.env["OMP_NUM_THREADS"] = "1"  # 2 threads on 2 busy cores: 40 img/s; 1 thread: 4,000
    r.write_params(one_model_params())
    r.run("git", "init", "-q", "-b", "main")
    r.run("git", "config", "user.name", "CIFARbench test")
    r.run("git", "config", "user.email", "test@cifarbench.invalid")
    r.commit("tiny project")
    r.run("git", "tag", "empty")  # a revision with no results
    ran = r.stages_run("repro")  # the pipeline to the per-image files
    assert ran == {s for s in stages_for([VIT]) if s.split("@")[0] in PIPELINE}, ran
    r.commit("baseline")
    r.run("git", "tag", "v1")
    assert r.stages_run("exp", "run", "-S", f"train.{VIT}.epochs=1", "--name", "one", TARGET) >= {TARGET}
    r.restore()
    out = r.dvc("exp", "run", "--queue", "-S", f"train.{VIT}.epochs=1,2", "--name", "sweep", TARGET).stdout
    assert out.count("Queued experiment") == 2, out
    # DVC's sweep syntax, run by two queue workers at once (their results are checked below)
    r.sweep = ["sweep-1", "sweep-2"]
    states, r.ran_together = run_queue(r, r.sweep, jobs=2)
    failed = [name for name in r.sweep if states.get(name) != "Success"]
    assert not failed, "\n".join(r.dvc("queue", "logs", n, check=False).stdout[-3000:] for n in failed)
    yield r
    r.dvc("queue", "stop", "--kill", check=False)


def test_a_queued_sweep_runs_two_at_once_each_in_dvc_exp_show_sorted_by_its_metric(repo):
    """`dvc exp run --queue -S 'key=a,b'` queued two; `dvc queue start -j 2` ran them at the same time,
    and `dvc exp show` lists each with its own params and metrics, sortable by a metric column."""
    assert repo.ran_together, "the two workers should run two experiments at the same time"
    shown = json.loads(repo.dvc("exp", "show", "--json").stdout)
    exps = {
        e["name"]: e["revs"][0]["data"]
        for commit in shown
        for e in (commit.get("experiments") or [])
        if e.get("name") in repo.sweep
    }
    assert set(exps) == set(repo.sweep), "dvc exp show lists every queued experiment"
    assert sorted(d["params"]["params.yaml"]["data"]["train"][VIT]["epochs"] for d in exps.values()) == [1, 2]
    assert sorted(d["metrics"][TRAINED]["data"]["epochs_run"] for d in exps.values()) == [1, 2]  # each its own
    column = "best_val_acc"
    out = repo.dvc("exp", "show", "--csv", "--sort-by", f"{TRAINED}:{column}", "--sort-order", "desc").stdout
    header, *rows = list(csv.reader(io.StringIO(out)))
    # the column bears its file's path where another metrics file has the same key (the transfer's summary)
    named = [i for i, h in enumerate(header) if h.endswith(f":{column}") and "train-cifar10" in h]
    index = named[0] if named else header.index(column)
    swept = [float(r[index]) for r in rows if r[0] in repo.sweep]
    assert len(swept) == 2 and swept == sorted(swept, reverse=True)  # sorted by the metric, as README shows


def run_compare(repo, monkeypatch, *args):
    """compare's rows, in this process (the command's own process is tested below)."""
    monkeypatch.chdir(repo.path)
    every = "--all" in args
    revs = [a for a in args if not a.startswith("--")]
    return compare.compare(*revs, every=every) if revs or every else compare.compare()


def cells(rows):
    return {(r["b"].split(" ")[0], r["dataset"]): r for r in rows}


def test_per_image_files_are_git_tracked_small_and_not_metrics(repo):
    listed = repo.run("git", "ls-files", "metrics/per_image").stdout.split()
    assert listed == [f"metrics/per_image/{VIT}-{d}-0.json" for d in ("cifar10", "cifar100")]
    for name in listed:
        run = inputs.per_image((repo.path / name).read_bytes(), name)
        # base64 of a class, a bit, a float32 confidence, a uint16 index and a uint8 hit count per test image,
        # and a float32 score per out-of-distribution image: under 11 and 5.4 bytes
        size = len((repo.path / name).read_bytes())
        assert run.n_classes in (10, 100) and size < 11 * run.correct.size + 5.4 * run.ood_scores.size + 600
        assert run.confidence.size == run.correct.size and run.corruption_runs == 4 and run.corruption_hits.size
    shown = json.loads(repo.dvc("metrics", "show", "--json").stdout)
    assert not any("per_image" in path for rev in shown.values() for path in rev.get("data", {})), shown


def test_identical_experiments_give_identical_predictions_and_p_1(repo, monkeypatch):
    """`one` (in the workspace) and `sweep-1` (in the queue's own copy) ran the same params and seed."""
    path = f"metrics/per_image/{VIT}-cifar10-0.json"
    monkeypatch.chdir(repo.path)
    shas = [compare.revisions.resolve(name).sha for name in ("one", "sweep-1", "main")]
    shown = [repo.run("git", "show", f"{sha}:{path}").stdout for sha in shas]
    assert shown[0] == shown[1] != shown[2]
    rows = run_compare(repo, monkeypatch, "one", "sweep-1")
    assert [(r["verdict"], r["mcnemar_p"], r["holm_p"], r["diff"]) for r in rows] == [("inconclusive", 1.0, 1.0, 0)] * 2


def test_a_clearly_better_recipe_is_better_and_swapping_flips_it(repo, monkeypatch):
    worse = cells(run_compare(repo, monkeypatch, "main", "one"))
    better = cells(run_compare(repo, monkeypatch, "one", "main"))
    w, b = worse[("one", "cifar10")], better[("main", "cifar10")]
    assert w["verdict"] == "worse" and b["verdict"] == "better"
    assert w["top1_a"] > 0.3 and w["top1_b"] < 0.2, w  # 6 epochs against 1
    assert w["holm_p"] < 1e-6 and b["holm_p"] == w["holm_p"]  # far from 0.05 on 334 images
    assert w["diff"] == pytest.approx(-b["diff"]) and w["diff_ci"][1] < 0 < b["diff_ci"][0]
    assert w["diff_ci"] == pytest.approx([-b["diff_ci"][1], -b["diff_ci"][0]], abs=0.01)
    # CIFAR-100 was not re-run: the baseline's own results on both sides
    assert worse[("one", "cifar100")]["diff"] == 0 and worse[("one", "cifar100")]["verdict"] == "inconclusive"
    # the other numbers from the real per-image files (this repo runs no probe stage: no probe row)
    assert list(w["others"]) == ["corruption_top1", "ood_auroc", "ece"]
    assert w["others"]["corruption_top1"]["diff"] < 0 and w["others"]["corruption_top1"]["verdict"] == "worse"
    assert {c["p"] for c in worse[("one", "cifar100")]["others"].values()} == {1.0}


def test_branches_commits_tags_and_experiment_names_resolve(repo, monkeypatch):
    sha = repo.run("git", "rev-parse", "main").stdout.strip()
    expected = [(r["dataset"], r["diff"], r["verdict"]) for r in run_compare(repo, monkeypatch, "main", "one")]
    for a in ("v1", sha, sha[:8], "HEAD"):
        rows = run_compare(repo, monkeypatch, a, "one")
        assert [(r["dataset"], r["diff"], r["verdict"]) for r in rows] == expected, a
        assert rows[0]["a"] == f"{a} ({sha[:7]})"
    # an experiment's name resolves to the commit `dvc exp show` gives it
    shown = json.loads(repo.dvc("exp", "show", "--json").stdout)
    dvc_sha = {e["name"]: e["revs"][0]["rev"] for c in shown for e in c.get("experiments") or []}
    assert compare.revisions.resolve("one").sha == dvc_sha["one"]
    assert {e.name for e in compare.revisions.experiments_of(compare.revisions.resolve("main"))} == {
        "one",
        "sweep-1",
        "sweep-2",
    }
    # default: HEAD against the workspace, which holds the baseline's results again
    assert [(r["a"].split()[0], r["b"], r["verdict"], r["diff"]) for r in run_compare(repo, monkeypatch)] == [
        ("HEAD", "workspace", "inconclusive", 0)
    ] * 2


def test_all_after_a_two_value_sweep_gives_a_row_per_experiment_and_cell(repo, monkeypatch):
    rows = run_compare(repo, monkeypatch, "--all")
    assert sorted(cells(rows)) == sorted((e, d) for e in ("one", "sweep-1", "sweep-2") for d in ("cifar10", "cifar100"))
    assert all(r["a"].startswith("HEAD (") for r in rows)
    # Holm over all six rows: each cifar10 p-value multiplied by up to 6, never by less than the cell count alone
    p = sorted(r["mcnemar_p"] for r in rows)
    assert max(r["holm_p"] for r in rows if r["mcnemar_p"] == p[0]) == pytest.approx(min(1, 6 * p[0]))
    assert [cells(rows)[(e, "cifar10")]["verdict"] for e in ("one", "sweep-1", "sweep-2")] == ["worse"] * 3


def cifarbench_cmd(repo, *args, cwd=None, here=True):
    """The `cifarbench` command's status, stdout and stderr: run here (its console script's main() in this process,
    which has numpy and scipy loaded: a process spends a second or two on them first), or, here=False, the installed
    command in a process of its own, on the copy's package (Repo's PYTHONPATH)."""
    if not here:
        script = str(Path(sys.executable).parent / "cifarbench")
        return subprocess.run([script, *args], cwd=cwd or repo.path, env=repo.env, capture_output=True, text=True)
    return run_here(cwd or repo.path, lambda: cli.main(list(args)), command=["cifarbench", *args])


def test_fail_if_worse_exits_1_exactly_when_a_cell_is_worse(repo):
    statuses = {}
    for i, (a, b) in enumerate((("main", "one"), ("one", "main"), ("one", "sweep-1"))):
        # the first as a process of its own: the installed command's exit status
        proc = cifarbench_cmd(repo, "compare", a, b, "--fail-if-worse", here=i > 0)
        assert proc.stderr == "", proc.stderr
        statuses[(a, b)] = proc.returncode
    assert statuses == {("main", "one"): 1, ("one", "main"): 0, ("one", "sweep-1"): 0}
    proc = cifarbench_cmd(repo, "compare", "main", "one", "--json")  # without the flag: 0 whatever the verdict
    assert proc.returncode == 0 and {r["verdict"] for r in json.loads(proc.stdout)} == {"worse", "inconclusive"}
    text = cifarbench_cmd(repo, "compare", "main", "one").stdout
    assert "only test-set sampling is accounted for" in text and "worse" in text
    assert max(len(line) for line in text.splitlines()) <= 120


def one_line_error(proc):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_bad_input_is_one_line_naming_it_and_the_fix_with_status_2(repo):
    line = one_line_error(cifarbench_cmd(repo, "compare", "main", "no-such-thing", here=False))  # a real process
    assert "unknown revision 'no-such-thing'" in line and "dvc exp show" in line
    line = one_line_error(cifarbench_cmd(repo, "compare", "empty", "main"))
    assert "empty (" in line and "no evaluate results yet" in line and "dvc repro" in line
    line = one_line_error(cifarbench_cmd(repo, "compare", "--all", "main", "one"))
    assert "--all" in line
    line = one_line_error(cifarbench_cmd(repo, "compare", "--all", "empty"))
    assert "has no experiments" in line
    line = one_line_error(cifarbench_cmd(repo, "compare", cwd=repo.path / "metrics"))
    assert "project root" in line
    per_image = repo.path / "metrics" / "per_image" / f"{VIT}-cifar10-0.json"
    good = per_image.read_text()
    try:
        # the workspace scored another test set (a digest that differs)
        other = json.loads(good)
        other["test_digest"] = "sha256:" + "0" * 64
        per_image.write_text(json.dumps(other))
        line = one_line_error(cifarbench_cmd(repo, "compare"))
        assert "scored different test sets" in line and "data" in line
        # a damaged file in the workspace, then committed on a branch
        per_image.write_text(good[: len(good) // 2])
        line = one_line_error(cifarbench_cmd(repo, "compare"))
        assert f"metrics/per_image/{VIT}-cifar10-0.json is damaged (not valid JSON" in line
        assert f"git checkout metrics/per_image/{VIT}-cifar10-0.json" in line
        repo.run("git", "checkout", "-q", "-b", "damaged")
        repo.commit("a damaged per-image file")
        line = one_line_error(cifarbench_cmd(repo, "compare", "main", "damaged"))
        assert f"{VIT}-cifar10-0.json at damaged (" in line and "is damaged" in line
    finally:
        repo.run("git", "checkout", "-q", "main")
        repo.restore()
    assert per_image.read_text() == good


@pytest.fixture(scope="module")
def two_seeds(repo):
    """Branches seeds-6 and seeds-1: two training seeds each (the second one CIFAR-10 only), 6 and 1 epochs."""
    target = f"evaluate@{VIT}-cifar10-1"
    try:
        for branch, start in (("seeds-6", None), ("seeds-1", "one")):
            repo.run("git", "checkout", "-q", "-b", branch, "main")
            if start:
                repo.dvc("exp", "apply", start)  # the experiment's params and results in the workspace
            repo.set_param("seeds", [0, 1])
            assert repo.stages_run("repro", target) >= {f"train-cifar10@{VIT}-1", target}
            repo.commit(f"two seeds, {branch}")
    finally:
        repo.run("git", "checkout", "-q", "main")
        repo.restore()
    return repo


def test_the_seed_level_test_appears_with_two_seeds_a_side(two_seeds, monkeypatch):
    repo = two_seeds
    rows = cells(run_compare(repo, monkeypatch, "seeds-6", "seeds-1"))
    seeded, single = rows[("seeds-1", "cifar10")], rows[("seeds-1", "cifar100")]
    assert (seeded["n_seeds_a"], seeded["n_seeds_b"], single["n_seeds_a"]) == (2, 2, 1)
    top1 = {
        rev: [
            json.loads(repo.run("git", "show", f"{rev}:metrics/evaluate/{VIT}-cifar10-{s}.json").stdout)["top1"]
            for s in (0, 1)
        ]
        for rev in ("seeds-6", "seeds-1")
    }
    assert seeded["seed_p"] == pytest.approx(sps.ttest_ind(top1["seeds-1"], top1["seeds-6"], equal_var=False).pvalue)
    assert seeded["top1_a"] == pytest.approx(np.mean(top1["seeds-6"]))
    assert seeded["seed_holm_p"] == pytest.approx(min(1, seeded["seed_p"]))  # the only cell with a seed test
    assert single["seed_p"] is None and single["seed_holm_p"] is None
    first_diff = top1["seeds-1"][0] - top1["seeds-6"][0]
    expected = compare.verdict(seeded["diff"], first_diff, seeded["holm_p"] <= 0.05, seeded["seed_holm_p"] <= 0.05)
    assert seeded["verdict"] == expected
    text = compare.as_text(list(rows.values()))
    assert "seeds p" in text and "only test-set sampling is accounted for" in text  # CIFAR-100 has one seed
    assert not math.isnan(seeded["seed_p"])
