"""Resumable training state, written atomically at the end of every epoch.

A train or transfer stage killed at any moment (SIGINT, SIGTERM, SIGKILL) and
rerun continues after the last completed epoch, and on CPU ends with exactly
the metrics of an uninterrupted run: the state holds the model, optimizer,
scheduler, grad scaler, every RNG, the early-stopping counters, the best
weights so far and the per-epoch history (to rebuild the DVCLive logs).

The state is a `persist: true` DVC output, so DVC leaves it in place when it
reruns the stage. It is only used when its fingerprint matches the run about
to start: the recipe, model spec, seed, compute settings and world size (not
the nodes it ran on), the input data and starting checkpoint, and the source
files of the stage that can change its numbers. Settings and files that change
no number (params.SPEED_ONLY, sourcefiles.NO_NUMBERS) stay out of it, so a
killed run resumes after a reworded error message or with compilation turned
off. A changed recipe never resumes from another recipe's state.

When a run finishes, the state shrinks to a "finished" record with no tensors
(so DVC's cache does not keep gigabytes of optimizer state): the per-epoch
history, the summary, the cost and the MD5 of the best checkpoint, which is a
`persist: true` output too. A rerun with the same fingerprint (DVC reruns the
stage because a file it lists changed in a way that changes no number) finds
that checkpoint in place and writes the logs and the cost again, in seconds,
without training. Deleting the state file makes the next run train again.
"""

import hashlib
import json
from pathlib import Path

import torch

from cifarbench import atomic

# 2: timm schedule state, code digest of the stage's own import closure; 3: speed settings and
# NO_NUMBERS files left out, the finished record keeps what rewrites the outputs
FORMAT = 3


def file_digest(path):
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(*, stage, spec, recipe, seed, compute, processes, inputs, code):
    """A digest of everything that decides what an epoch computes.

    compute: params' compute section; where the ranks run (`devices` per node,
    `nodes`) counts only through `processes`, the world size. A rank's shard of
    every epoch and its random streams follow from its rank and the world size
    alone, so a state saved by 2 nodes x 1 process resumes exactly on 1 node x 2
    processes, or on other nodes; a state of another world size (it holds one
    set of RNGs per rank) is not resumed. Host names, ports and SLURM job ids
    never enter it.
    code: a digest of the stage's source files that can change its numbers
    (sourcefiles.numbers_closure): dvc.yaml lists these and the NO_NUMBERS ones.
    Speed settings (params.SPEED_ONLY) stay out: a killed run resumes under them.
    """
    parts = {
        "stage": stage,
        "spec": spec.model_dump(),
        "recipe": recipe.deciding(),
        "seed": seed,
        "compute": {k: v for k, v in compute.deciding().items() if k != "devices"},
        "processes": processes,
        "inputs": {str(p): file_digest(p) for p in inputs},
        "code": code,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def load(path, expected_fingerprint):
    """The saved state if it belongs to this exact run (unfinished, or the finished record); else None (and why)."""
    path = Path(path)
    if not path.is_file():
        return None, "no saved state"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - an unreadable state only means "start fresh"
        return None, f"saved state unreadable ({type(exc).__name__}), starting fresh"
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        return None, "saved state has another format, starting fresh"
    if state.get("fingerprint") != expected_fingerprint:
        return None, "saved state belongs to another recipe, data or code, starting fresh"
    if state.get("finished"):
        return state, "the run with this recipe, data and code finished before"
    return state, f"resuming after epoch {state['trainer']['epoch']}"


def save(path, fingerprint_, trainer_state, history, best):
    atomic.torch_save(
        path,
        {
            "format": FORMAT,
            "fingerprint": fingerprint_,
            "finished": False,
            "trainer": trainer_state,
            "history": history,
            "best": best,
        },
    )


def mark_finished(path, fingerprint_, *, history, summary, cost, checkpoint_md5):
    """The finished record: no tensors, only what writes the stage's outputs again (see the module's docstring)."""
    atomic.torch_save(
        path,
        {
            "format": FORMAT,
            "fingerprint": fingerprint_,
            "finished": True,
            "history": history,
            "summary": summary,
            "cost": cost,
            "checkpoint_md5": checkpoint_md5,
        },
    )
