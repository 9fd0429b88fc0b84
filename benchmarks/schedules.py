"""Learning-rate schedules compared at the same short budget on the digits stand-in.

    python benchmarks/schedules.py [--epochs 8] [--lr 0.05] [--seeds 0,1,2] [--model resnet18] [--json]

The demo's recipe for the model's family (params.yaml with `make demo`'s
overrides: random init, 32 px, SGD) on the 10-class digits slot, trained with
`plateau` (ReduceLROnPlateau on validation accuracy, patience 1, the original
notebooks' choice), `cosine` after a one-epoch warm-up (timm's fine-tuning
default, what the committed recipes use) and `cosine` without warm-up. Each
run keeps its best-validation weights, as the train stage does, and is scored
on the digits test split. Prints per-epoch validation accuracy and test top-1
per run, then the mean per schedule. About 3 minutes on a 2-core CPU with the
defaults.
"""

import argparse
import json
import statistics
from pathlib import Path

import torch

from cifarbench import params as paramslib
from cifarbench.commands import demo
from cifarbench.data import dataset, transforms
from cifarbench.data.sources.digits import make_digits
from cifarbench.models import inference, timm_models
from cifarbench.runtime import device as runtimelib
from cifarbench.train import engine

SCHEDULES = {
    "plateau": {"schedule": "plateau", "warmup_epochs": 0, "plateau_patience": 1},
    "cosine+warmup": {"schedule": "cosine", "warmup_epochs": 1},
    "cosine": {"schedule": "cosine", "warmup_epochs": 0},
}


def run(raw, key, seed, tensors, test):
    p = paramslib.parse(raw)
    rt = runtimelib.resolve(p.compute)
    spec = p.model(key)
    torch.manual_seed(seed)
    model = inference.prepare_model(timm_models.create(spec, num_classes=10), rt)
    prep = inference.preprocess_for(model, rt, spec.img_size)
    trainer = engine.Trainer(model, p.recipe("train", key), rt, prep, seed, p.compute.eval_batch_size, len(tensors[1]))
    best_state, vals = None, []
    for epoch in trainer.epochs(*tensors):
        vals.append(round(epoch.val_acc, 3))
        if epoch.improved:
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    logits = inference.infer(model, test[0], prep, rt, p.compute.eval_batch_size)
    return vals, round(float((logits.argmax(1) == test[1]).float().mean()), 4)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--model", default="resnet18", help="a key of params.yaml's models registry")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    committed = paramslib.read_yaml(Path(__file__).resolve().parents[1] / "params.yaml")
    base = demo.apply(committed, demo.overrides(paramslib.parse(committed)))
    splits = dataset.prepare(make_digits("cifar10"), base["data"]["limit"], base["data"]["val_size"], base["seed"])
    tensors = (
        transforms.to_tensor(splits["train"].images, "cpu"),
        torch.from_numpy(splits["train"].labels),
        transforms.to_tensor(splits["val"].images, "cpu"),
        torch.from_numpy(splits["val"].labels),
    )
    test = (transforms.to_tensor(splits["test"].images, "cpu"), torch.from_numpy(splits["test"].labels))

    results = {}
    for name, changes in SCHEDULES.items():
        recipe = {f"train.{args.model}.{k}": v for k, v in {**changes, "epochs": args.epochs, "lr": args.lr}.items()}
        for seed in (int(s) for s in args.seeds.split(",")):
            vals, top1 = run(demo.apply(base, recipe), args.model, seed, tensors, test)
            results.setdefault(name, []).append({"seed": seed, "val_acc": vals, "test_top1": top1})
            if not args.json:
                print(f"{name:14s} seed {seed}: val {vals} -> test top-1 {top1:.4f}", flush=True)
    summary = {
        name: {"mean_test_top1": round(statistics.mean(r["test_top1"] for r in runs), 4), "runs": runs}
        for name, runs in results.items()
    }
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        for name, s in summary.items():
            print(f"{name:14s} mean test top-1 {s['mean_test_top1']:.4f}")


if __name__ == "__main__":
    main()
