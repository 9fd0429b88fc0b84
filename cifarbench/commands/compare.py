"""`cifarbench compare [A [B]]`: which top-1 differences between two revisions' results are real.

A and B are what `dvc metrics diff` takes (a commit, branch, tag or experiment name; default HEAD
and the workspace). A side's runs are the evaluate stages its dvc.lock records for the models and
seeds its params.yaml names; their per-image files (metrics/per_image/, git-tracked) are read at the
revision (revisions.read), never by checking it out. For every model x dataset on both sides, paired
over the same test images (the files' test-set digests must agree):

- top1_a, top1_b: the mean top-1 over each side's training seeds; diff = top1_b - top1_a;
- diff_ci: the 95 % paired bootstrap interval of diff over the test images, each image's
  correctness averaged over the side's seeds (as the report's intervals are; seeded, deterministic);
- mcnemar_p: the exact McNemar test on each side's first training seed's 0/1 outcomes (as the
  report's comparisons.json does: seed-averaged correctness is fractional, McNemar counts 0/1 pairs);
- holm_p: Holm's correction over every cell compared (with --all over every experiment's cells:
  a sweep is one family of tests);
- seed_p, seed_holm_p: with two or more seeds on both sides, Welch's t-test on the per-seed top-1s
  (seed-to-seed variance is often the larger noise), Holm-corrected over the cells that have it;
- verdict, B against A: `better` or `worse` when holm_p holds at ALPHA, seed_holm_p too where there
  is one, and the first seeds' difference points the way diff does; else `inconclusive`.

Beside top-1, `others` compares probe_top1, corruption_top1, ood_auroc and ece where both sides' files hold
what they need (per-image files from before the intervals on every number hold top-1 alone), each paired
over the same images: a, b (seed-averaged), diff = b - a with its 95 % paired bootstrap interval, p (exact
McNemar on the probes' 0/1 outcomes; for the others the two-sided bootstrap p of the same resamples), holm_p
corrected over every such cell compared (one family, apart from top-1's, whose columns and exit codes are
unchanged), and a verdict (lower ece is better).
"""

import json
import os
import re
import sys
import textwrap
from pathlib import Path

import numpy as np
import yaml

from cifarbench import inputs, paths
from cifarbench.commands import revisions
from cifarbench.errors import BenchError
from cifarbench.eval import ood, stats
from cifarbench.paths import DATASETS
from cifarbench.pipeline import summaries

ALPHA = summaries.SIGNIFICANCE  # 0.05, family-wise (Holm), as the report's comparisons
RESAMPLES = 1000  # paired bootstrap resamples of the test images (the evaluate.bootstrap default)
BOOTSTRAP_SEED = 0  # the same intervals on every run
LOCK, PARAMS = "dvc.lock", "params.yaml"
VERDICTS = ("better", "worse", "inconclusive")
WIDTH = 120  # the readable table's notes wrap here; its rows stay under it for 3 models x 2 datasets
_EVALUATE = re.compile(rf"^evaluate@(?P<model>.+)-(?P<dataset>{'|'.join(DATASETS)})-(?P<seed>\d+)$")
_PROBE = re.compile(rf"^probe@(?P<model>.+)-(?P<dataset>{'|'.join(DATASETS)})$")
# compared beside top-1: whether a higher value is the better one
OTHERS = {"probe_top1": True, "corruption_top1": True, "ood_auroc": True, "ece": False}
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _where(revision):
    return "the workspace" if revision.sha is None else revision.label


def _not_yet(revision, why):
    fix = (
        "run `dvc repro` first"
        if revision.sha is None
        else "run `dvc repro` there and commit its results (`git add -A`), or compare another revision"
    )
    return BenchError(f"{_where(revision)} has no evaluate results yet ({why}): {fix}")


def _registry(data):
    """(model keys, seeds) a params.yaml names, each None where it cannot say (read as DVC does: YAML 1.2)."""
    from ruamel.yaml import YAML, YAMLError

    try:
        raw = YAML(typ="safe").load(data.decode("utf-8")) if data else None
    except (UnicodeDecodeError, YAMLError):
        return None, None
    raw = raw if isinstance(raw, dict) else {}
    models, seeds = raw.get("models"), raw.get("seeds")
    return (set(models) if isinstance(models, dict) else None), (set(seeds) if isinstance(seeds, list) else None)


def lock_stages(revision, lock):
    """{stage name: its dvc.lock entry} of a revision's dvc.lock (bytes), read once for every file list below."""
    if lock is None:
        raise _not_yet(revision, "no dvc.lock")
    try:
        return (yaml.load(lock.decode("utf-8"), Loader=_LOADER) or {}).get("stages") or {}
    except (UnicodeDecodeError, yaml.YAMLError, AttributeError):
        raise BenchError(f"dvc.lock at {_where(revision)} is not a readable lock file: restore it from git") from None


def _outs(stage):
    return {out.get("path") for out in (stage or {}).get("outs") or [] if isinstance(out, dict)}


def runs(revision, stages, params):
    """{(dataset, model): {seed: per-image file path}}: the evaluate runs a revision's dvc.lock (lock_stages)
    records."""
    models, seeds = _registry(params)
    found, predating = {}, []
    for name, stage in stages.items():
        match = _EVALUATE.match(name)
        if not match or (models is not None and match["model"] not in models):
            continue
        seed = int(match["seed"])
        if seeds is not None and seed not in seeds:
            continue
        path = paths.per_image(match["model"], match["dataset"], seed).as_posix()
        if path not in _outs(stage):
            predating.append(name)
            continue
        found.setdefault((match["dataset"], match["model"]), {})[seed] = path
    if predating:
        raise BenchError(
            f"{_where(revision)}'s {predating[0]} ran before evaluate wrote per-image predictions "
            f"(metrics/per_image/): rerun `dvc repro` {'there and commit its results' if revision.sha else ''}".rstrip()
        )
    if not found:
        raise _not_yet(revision, "its dvc.lock records no evaluate stage of its params.yaml's models")
    return found


def probe_files(stages):
    """{(dataset, model): probe per-image file path} of the probe stages a dvc.lock (lock_stages) records with
    that output."""
    found = {}
    for name, stage in stages.items():
        match = _PROBE.match(name)
        if not match:
            continue
        path = paths.probe_per_image(match["model"], match["dataset"]).as_posix()
        if path in _outs(stage):
            found[(match["dataset"], match["model"])] = path
    return found


def load(sides):
    """({Revision: {(dataset, model): {seed: inputs.PerImage}}}, {Revision: {(dataset, model):
    inputs.ProbePerImage}}) for every revision in `sides`, read in two batches."""
    head = revisions.read([(r, LOCK) for r in sides] + [(r, PARAMS) for r in sides])
    stages = {r: lock_stages(r, head[i]) for i, r in enumerate(sides)}
    listed = {r: runs(r, stages[r], head[len(sides) + i]) for i, r in enumerate(sides)}
    probes = {r: probe_files(stages[r]) for r in sides}
    requests = [
        (r, cell, seed, path) for r in sides for cell, seeds in listed[r].items() for seed, path in seeds.items()
    ]
    probe_requests = [(r, cell, path) for r in sides for cell, path in probes[r].items() if cell in listed[r]]
    contents = revisions.read([(r, path) for r, _, _, path in requests] + [(r, path) for r, _, path in probe_requests])
    probe_contents = contents[len(requests) :]
    out, probed = {r: {} for r in sides}, {r: {} for r in sides}
    for (r, cell, path), data in zip(probe_requests, probe_contents):
        if data is not None:  # a probe file the lock lists but git lacks: that cell's probe is not compared
            probed[r][cell] = inputs.probe_per_image(data, path, None if r.sha is None else r.label)
    for (r, cell, seed, path), data in zip(requests, contents):
        if data is None:
            if r.sha is None:
                raise inputs.missing(path)
            raise BenchError(
                f"{path} is missing at {r.label}, though its dvc.lock lists it: commit the pipeline's results with "
                "`git add -A` (`git commit -am` leaves new files out)"
            )
        out[r].setdefault(cell, {})[seed] = inputs.per_image(data, path, None if r.sha is None else r.label)
    return out, probed


def _same_test_set(a, b, cell, a_runs, b_runs):
    digests = {
        (side.label, seed): run.test_digest for side, rs in ((a, a_runs), (b, b_runs)) for seed, run in rs.items()
    }
    if len(set(digests.values())) > 1:
        first, d1 = next(iter(digests.items()))
        other, d2 = next((k, d) for k, d in digests.items() if d != d1)
        dataset, model = cell
        raise BenchError(
            f"{model} on {dataset}: {first[0]} seed {first[1]} and {other[0]} seed {other[1]} scored different test "
            f"sets (test-set digests {d1[7:19]}... and {d2[7:19]}...); compare revisions whose data settings "
            "(params.yaml's data:) agree, or rerun evaluate on the same data"
        )


def cell_stats(a_runs, b_runs):
    """The paired statistics of one model x dataset: {seed: PerImage} a side, on the same test images."""
    a_seeds, b_seeds = sorted(a_runs), sorted(b_runs)
    a_avg = summaries.seed_averaged({s: {"correct1": a_runs[s].correct} for s in a_seeds}, "correct1")
    b_avg = summaries.seed_averaged({s: {"correct1": b_runs[s].correct} for s in b_seeds}, "correct1")
    diff, lo, hi = stats.paired_bootstrap_ci(b_avg, a_avg, resamples=RESAMPLES, seed=BOOTSTRAP_SEED)
    first_a, first_b = a_runs[a_seeds[0]].correct, b_runs[b_seeds[0]].correct
    seeded = len(a_seeds) >= 2 and len(b_seeds) >= 2
    return {
        "n_test": int(a_avg.size),
        "n_seeds_a": len(a_seeds),
        "n_seeds_b": len(b_seeds),
        "top1_a": float(a_avg.mean()),
        "top1_b": float(b_avg.mean()),
        "diff": diff,
        "diff_ci": [lo, hi],
        "first_seed_diff": float(first_b.mean() - first_a.mean()),
        "mcnemar_p": stats.mcnemar_exact(first_a, first_b),
        "seed_p": stats.welch_p([b_runs[s].top1 for s in b_seeds], [a_runs[s].top1 for s in a_seeds])
        if seeded
        else None,
    }


def _averaged(runs_, field):
    """(seeds, n) float64 array of one per-image field, or None where a run's file lacks it."""
    values = [getattr(run, field) for run in runs_.values()]
    return None if any(v is None for v in values) else summaries.over_seeds(values)


def _other(a, b, ci_p):
    lo, hi, p = ci_p
    return {"a": float(a), "b": float(b), "diff": float(b - a), "diff_ci": [lo, hi], "p": p}


def other_stats(a_runs, b_runs, a_probe=None, b_probe=None):
    """{number: {a, b, diff, diff_ci, p}} of OTHERS that both sides' files hold, paired over the same images: the
    statistics of summary.json's intervals (summaries.ece_over_seeds, ...) on the same resamples for both sides."""
    out, resampling = {}, {"resamples": RESAMPLES, "seed": BOOTSTRAP_SEED}
    sides = (a_runs, b_runs)

    def paired(a, b, sizes):
        """_other for statistics a, b of index matrices: their values on every image, the test of b - a."""
        every = [np.arange(n)[None] for n in sizes]
        test = stats.paired_bootstrap_test(lambda *index: b(*index) - a(*index), sizes, **resampling)
        return _other(a(*every)[0], b(*every)[0], test)

    def mean_of(values):
        return lambda index: values[index].mean(axis=1)

    if a_probe is not None and b_probe is not None and a_probe.correct.shape == b_probe.correct.shape:
        a, b = a_probe.correct.astype(np.float64), b_probe.correct.astype(np.float64)
        probe = paired(mean_of(a), mean_of(b), [a.size])
        probe["p"] = stats.mcnemar_exact(a_probe.correct, b_probe.correct)  # 0/1 outcomes: the exact test
        out["probe_top1"] = probe
    hits = [_averaged(r, "corruption_hits") for r in sides]
    index = [next(iter(r.values())).corruption_index for r in sides]
    if all(h is not None for h in hits) and np.array_equal(index[0], index[1]) and len(index[0]):
        a, b = (summaries.corruption_shares(h, next(iter(r.values())).corruption_runs) for h, r in zip(hits, sides))
        out["corruption_top1"] = paired(mean_of(a), mean_of(b), [a.size])
    confidence = [_averaged(r, "confidence") for r in sides]
    if all(c is not None for c in confidence):
        correct = [_averaged(r, "correct") for r in sides]
        ece = [summaries.ece_over_seeds(c, k) for c, k in zip(confidence, correct)]
        out["ece"] = paired(*ece, [confidence[0].shape[1]])
        scores = [_averaged(r, "ood_scores") for r in sides]
        if all(s_ is not None for s_ in scores) and scores[0].shape[1] == scores[1].shape[1]:
            auroc = [summaries.ood_over_seeds(ood.auroc_resampled, c, s_) for c, s_ in zip(confidence, scores)]
            out["ood_auroc"] = paired(*auroc, [confidence[0].shape[1], scores[0].shape[1]])
    return {name: out[name] for name in OTHERS if name in out}


def verdict(diff, first_seed_diff, significant, seed_significant=None):
    """B against A: 'better' or 'worse' when the image-level test holds (after Holm), the seed-level test
    holds where there is one (None: fewer than 2 seeds a side), and the first seeds' difference
    (what McNemar tested) points the way the seed-averaged one does; else 'inconclusive'."""
    if not significant or seed_significant is False or diff == 0 or np.sign(first_seed_diff) != np.sign(diff):
        return "inconclusive"
    return "better" if diff > 0 else "worse"


def judge(rows):
    """Holm over every compared row (image-level p, and apart the seed-level p), then each row's verdict."""
    compared = [r for r in rows if r["only_in"] is None]
    adjusted, reject = stats.holm([r["mcnemar_p"] for r in compared], ALPHA)
    seeded = [r for r in compared if r["seed_p"] is not None]
    seed_adjusted, seed_reject = stats.holm([r["seed_p"] for r in seeded], ALPHA)
    seed_ok = {id(r): ok for r, ok in zip(seeded, seed_reject)}
    for r, p in zip(seeded, seed_adjusted):
        r["seed_holm_p"] = p
    for r, p, ok in zip(compared, adjusted, reject):
        r["holm_p"] = p
        r["verdict"] = verdict(r["diff"], r["first_seed_diff"], ok, seed_ok.get(id(r)))
    cells = [(name, cell) for r in compared for name, cell in (r.get("others") or {}).items()]
    other_adjusted, other_reject = stats.holm([cell["p"] for _, cell in cells], ALPHA)
    for (name, cell), p, ok in zip(cells, other_adjusted, other_reject):
        better = cell["diff"] > 0 if OTHERS[name] else cell["diff"] < 0
        cell["holm_p"], cell["verdict"] = (
            p,
            ("better" if better else "worse") if ok and cell["diff"] else "inconclusive",
        )
    return rows


def _row(a, b, dataset, model, only_in=None, **values):
    row = {"a": a.label, "b": b.label, "dataset": dataset, "model": model}
    row.update(dict.fromkeys(("n_test", "n_seeds_a", "n_seeds_b", "top1_a", "top1_b", "diff", "diff_ci")))
    row.update(dict.fromkeys(("mcnemar_p", "holm_p", "seed_p", "seed_holm_p", "verdict", "first_seed_diff")))
    row["others"] = {}
    row.update(values, only_in=only_in)
    return row


def rows_for(a, b, a_cells, b_cells, a_probes=None, b_probes=None):
    """One row per model x dataset of either side (in dataset, then registry order), before Holm."""
    a_probes, b_probes = a_probes or {}, b_probes or {}
    order = list(a_cells) + [c for c in b_cells if c not in a_cells]
    out = []
    for cell in sorted(order, key=lambda c: (DATASETS.index(c[0]), order.index(c))):
        if cell in a_cells and cell in b_cells:
            _same_test_set(a, b, cell, a_cells[cell], b_cells[cell])
            others = other_stats(a_cells[cell], b_cells[cell], a_probes.get(cell), b_probes.get(cell))
            out.append(_row(a, b, *cell, others=others, **cell_stats(a_cells[cell], b_cells[cell])))
        else:
            side, cells = ("a", a_cells) if cell in a_cells else ("b", b_cells)
            runs_ = cells[cell]
            top1 = float(np.mean([r.top1 for r in runs_.values()]))
            out.append(_row(a, b, *cell, only_in=side, **{f"top1_{side}": top1, f"n_seeds_{side}": len(runs_)}))
    return out


def compare(a_text=None, b_text=None, every=False):
    """The rows of `cifarbench compare` (JSON-ready dicts), Holm and verdicts applied."""
    if not Path("dvc.yaml").is_file():
        raise BenchError("no dvc.yaml here: run `cifarbench compare` from the project root")
    a = revisions.resolve(a_text or "HEAD")
    if not every:
        bs = [revisions.resolve(b_text or revisions.WORKSPACE)]
    elif a.sha is None:
        raise BenchError("--all compares the experiments of a commit against it: give a commit (default HEAD)")
    elif not (bs := revisions.experiments_of(a)):
        raise BenchError(f"{a.label} has no experiments: `dvc exp run` some first (`dvc exp show` lists them)")
    loaded, probes = load(list(dict.fromkeys([a, *bs])))
    return judge([row for b in bs for row in rows_for(a, b, loaded[a], loaded[b], probes[a], probes[b])])


PUBLIC = (
    "a",
    "b",
    "dataset",
    "model",
    "n_test",
    "n_seeds_a",
    "n_seeds_b",
    "top1_a",
    "top1_b",
    "diff",
    "diff_ci",
    "mcnemar_p",
    "holm_p",
    "seed_p",
    "seed_holm_p",
    "verdict",
    "only_in",
    "others",
)


def _rounded(value):
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def as_json(rows):
    """--json: a list of objects, accuracies and differences as fractions rounded to 6 digits, p-values as they are."""

    def kept(record, keys):
        return {k: record[k] if k.endswith("_p") or k == "p" else _rounded(record[k]) for k in keys}

    out = []
    for r in rows:
        row = kept(r, [k for k in PUBLIC if k != "others"])
        row["others"] = {name: kept(cell, list(cell)) for name, cell in (r.get("others") or {}).items()}
        out.append(row)
    return json.dumps(out, indent=2)


def _pct(v):
    return "" if v is None else f"{100 * v:.2f}%"


def _points(v):
    return f"{100 * v:+.2f}"


def _p(v):
    if v is None:
        return "-"
    return f"{v:.2f}" if v >= 0.01 else f"{v:.3f}" if v >= 0.001 else f"{v:.0e}"


def _cells(r, seeded):
    if r["only_in"]:
        side = r["only_in"].upper()
        values = [_pct(r["top1_a"]), _pct(r["top1_b"]), "", "", "", "", *([""] if seeded else []), f"only in {side}"]
    else:
        lo, hi = r["diff_ci"]
        values = [
            _pct(r["top1_a"]),
            _pct(r["top1_b"]),
            _points(r["diff"]),
            f"[{_points(lo)}, {_points(hi)}]",
            _p(r["mcnemar_p"]),
            _p(r["holm_p"]),
            *([_p(r["seed_holm_p"])] if seeded else []),
            r["verdict"],
        ]
    return [r["dataset"], r["model"], *values]


def _header(seeded):
    return [
        "dataset",
        "model",
        "top-1 A",
        "top-1 B",
        "B - A",
        "95 % interval",
        "McNemar p",
        "Holm p",
        *(["seeds p"] if seeded else []),
        "verdict",
    ]


OTHER_HEADER = ["dataset", "model", "number", "A", "B", "B - A", "95 % interval", "p", "Holm p", "verdict"]


def _other_rows(rows):
    out = []
    for r in rows:
        for name, cell in (r.get("others") or {}).items():
            if name == "ood_auroc":  # a 0-1 measure, in its own units
                shown, diff = (lambda v: f"{v:.3f}"), (lambda v: f"{v:+.3f}")
            else:
                shown, diff = _pct, _points
            lo, hi = cell["diff_ci"]
            out.append(
                ([r["b"]] if r.get("_every") else [])
                + [r["dataset"], r["model"], name, shown(cell["a"]), shown(cell["b"]), diff(cell["diff"])]
                + [f"[{diff(lo)}, {diff(hi)}]", _p(cell["p"]), _p(cell["holm_p"]), cell["verdict"]]
            )
    return out


def _notes(rows, every):
    compared = [r for r in rows if r["only_in"] is None]
    if not compared:
        return ["No model x dataset has results on both sides: nothing to compare."]
    n_test = sorted({(r["dataset"], r["n_test"]) for r in compared}, key=lambda t: DATASETS.index(t[0]))
    images = ", ".join(f"{n:,} on {d}" for d, n in n_test)
    notes = [
        f"B - A: top-1 difference in points, with its 95 % paired bootstrap interval over the same test images "
        f"({images}). McNemar p: exact test on the first training seed's predictions; Holm p: corrected over "
        f"{'every experiment' if every else 'every cell'} compared ({len(compared)} rows). Verdicts at {ALPHA}."
    ]
    single = [r for r in compared if r["seed_p"] is None]
    if single:
        notes.append(
            f"One training seed on a side{'' if len(single) == len(compared) else ' (rows without seeds p)'}: only "
            "test-set sampling is accounted for, and another training seed can move top-1 as much; with two or more "
            "seeds on both sides (`seeds: [0, 1, 2]`) the seed-level test is added."
        )
    if len(single) < len(compared):
        notes.append(
            "seeds p: Welch's t-test on the per-seed top-1s, after Holm; better or worse needs it to hold too."
        )
    if any(r.get("others") for r in compared):
        notes.append(
            "Other numbers, paired over the same images: the starting-weights linear probe's top-1 (McNemar p), "
            "top-1 under corruption, MSP AUROC against the other dataset's images and ECE (lower is better), each "
            "with a 95 % paired bootstrap interval and the bootstrap's two-sided p; Holm over every such cell "
            f"compared ({sum(len(r['others']) for r in compared)}), apart from top-1's."
        )
    return notes


def _text_table(table, right_from=2):
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = []
    for row in table:
        cells = [
            c.ljust(w) if i < right_from or i == len(row) - 1 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def _title(rows, every):
    a, bs = rows[0]["a"], list(dict.fromkeys(r["b"] for r in rows))
    if every:
        return f"A = {a}, B = each of its {len(bs)} experiment{'s' if len(bs) > 1 else ''}; verdicts are B's against A"
    return f"A = {a}, B = {bs[0]}; verdicts are B's against A"


def as_text(rows, every=False, markdown=False):
    """The readable table (markdown=True: a Markdown one), under 120 columns for 3 models x 2 datasets."""
    seeded = any(r["seed_p"] is not None for r in rows)
    groups = {}
    for r in rows:
        groups.setdefault(r["b"], []).append(r)
    notes = _notes(rows, every)
    others = _other_rows([{**r, "_every": every} for r in rows])
    if markdown:

        def table(header, body):
            lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
            return lines + ["| " + " | ".join(cells) + " |" for cells in body]

        lines = table(
            (["B"] if every else []) + _header(seeded), [([r["b"]] if every else []) + _cells(r, seeded) for r in rows]
        )
        if others:
            lines += ["", *table((["B"] if every else []) + OTHER_HEADER, others)]
        return "\n".join([_title(rows, every), "", *lines, "", "\n\n".join(notes)])
    out = [_title(rows, every)]
    for b, group in groups.items():
        out += ["", f"B = {b}"] if every else [""]
        out += _text_table([_header(seeded)] + [_cells(r, seeded) for r in group])
    if others:
        out += ["", "Other numbers"]
        out += _text_table([(["B"] if every else []) + OTHER_HEADER] + others, right_from=3 + every)
    out.append("")
    out += [textwrap.fill(note, WIDTH) for note in notes]
    return "\n".join(out)


def run(a_text=None, b_text=None, every=False, output="text", fail_if_worse=False):
    """Print the comparison; the exit status: 1 with fail_if_worse when a cell is significantly worse, else 0."""
    rows = compare(a_text, b_text, every)
    status = 1 if fail_if_worse and any(r["verdict"] == "worse" for r in rows) else 0
    try:
        print(as_json(rows) if output == "json" else as_text(rows, every, markdown=output == "md"), flush=True)
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return status
