"""Stage evaluate@<model>-<dataset>: top-1/top-5, per-class accuracy and confusion matrix on the test split."""

import argparse
import csv
import io

import torch

from cifarbench import DATASETS, MODELS, atomic, dataset, engine, figures, metrics, paths, transforms
from cifarbench import params as paramslib
from cifarbench import runtime as runtimelib
from cifarbench.errors import exit_on_bench_error


def confusion_csv(labels, predicted, classes):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["actual", "predicted"])
    writer.writerows((classes[a], classes[p]) for a, p in zip(labels, predicted))
    return out.getvalue()


@exit_on_bench_error
def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", choices=MODELS)
    parser.add_argument("dataset", choices=DATASETS)
    args = parser.parse_args()
    params = paramslib.load()
    rt = runtimelib.resolve(params.compute)
    data_dir = paths.data_dir(args.dataset)
    meta, test = dataset.load_meta(data_dir), dataset.load_split(data_dir, "test")
    model, preprocess, _ = engine.load_for_inference(paths.checkpoint(args.dataset, args.model), rt)
    images = transforms.to_tensor(test.images, rt.device)
    logits = engine.infer(model, images, preprocess, rt, params.compute.eval_batch_size)
    result, predicted, confusion = metrics.classification(logits, torch.from_numpy(test.labels), meta["classes"])
    result["device"] = rt.describe()
    atomic.write_json(paths.evaluation(args.model, args.dataset), result)
    atomic.write_text(paths.confusion_rows(args.model, args.dataset),
                      confusion_csv(test.labels, predicted, meta["classes"]))
    figures.confusion(confusion, meta["classes"],
                      f"{figures.model_name(args.model)} on {args.dataset} (top-1 {result['top1']:.1%})",
                      paths.figure(f"confusion-{args.model}-{args.dataset}"),
                      fine_to_coarse=dataset.fine_to_coarse(test, len(meta["classes"])),
                      coarse_classes=meta["coarse_classes"])
    print(f"{args.model} on {args.dataset}: top-1 {result['top1']:.4f}, top-5 {result['top5']:.4f} "
          f"({result['n_test']} test images)")


if __name__ == "__main__":
    main()
