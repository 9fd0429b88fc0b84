"""The evaluate stage's work: accuracy, calibration and cost of one checkpoint on the test split.

Two files per model and dataset, kept apart on purpose:
- metrics/evaluate/<model>-<dataset>-<seed>.json: top1, top5, ece, n_test,
  per_class and the reliability bins, all deterministic on CPU (a resumed
  training run can be compared byte for byte with an uninterrupted one);
- metrics/efficiency/<model>-<dataset>-<seed>.json: params, gflops, throughput,
  latency_ms, peak memory and the device, which vary from run to run (the report
  adds the training stage's own cost to them in metrics/cost.json).
"""

import csv
import io

import numpy as np
import torch

from cifarbench import atomic, dataset, efficiency, figures, inference, memory, metrics, models, paths, registry
from cifarbench import transforms

SAMPLES = {"cifar10": 30, "cifar100": 50}  # test images in the sample-predictions figure
SAMPLE_COLUMNS = {"cifar10": 6, "cifar100": 10}


def confusion_csv(labels, predicted, classes):
    """One `actual,predicted` row per test image, in test order (DVC's confusion templates read it)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["actual", "predicted"])
    writer.writerows((classes[a], classes[p]) for a, p in zip(labels, predicted))
    return out.getvalue()


def sample_indices(n_test, count):
    """Evenly spaced test images: the same ones for every model, independent of any seed."""
    return np.unique(np.linspace(0, n_test - 1, min(count, n_test)).round().astype(np.int64))


def cost(model, images, preprocess, rt, batch_size, img_size):
    """The efficiency file's content; call it last, so peak memory covers the whole stage."""
    total, _ = models.count_parameters(model)
    measured = efficiency.measure(model, images, preprocess, rt, batch_size, img_size)
    peak, measure = memory.peak(rt.device)
    return {"params": total, **measured, "peak_memory_mb": round(peak, 1), "memory_measure": measure,
            "device": rt.describe()}


def run(s):
    """Evaluate models/<dataset>/<model>-<seed>.pt on the test split; writes every output of its evaluate stage."""
    rt, key, ds, seed = s.runtime, s.model, s.dataset, s.seed
    memory.reset_peak(rt.device)
    data_dir = paths.data_dir(ds)
    meta = dataset.load_meta(data_dir)
    test = dataset.load_split(data_dir, "test", meta)
    model, preprocess, info = inference.load(paths.checkpoint(ds, key, seed), rt)
    images = transforms.to_tensor(test.images, rt.device)
    batch_size = s.params.compute.eval_batch_size
    logits = inference.infer(model, images, preprocess, rt, batch_size)
    result, predicted, confusion = metrics.classification(logits, torch.from_numpy(test.labels), meta["classes"])
    classes, name, ds_name = meta["classes"], registry.display_name(s.params.models[key]), registry.dataset_name(ds)

    atomic.write_json(paths.evaluation(key, ds, seed), result)
    atomic.write_text(paths.confusion_rows(key, ds, seed), confusion_csv(test.labels, predicted, classes))
    figures.confusion(confusion, classes, f"{name} on {ds_name} (top-1 {result['top1']:.1%})",
                      paths.figure(f"confusion-{key}-{ds}-{seed}"), fine_to_coarse=meta.get("fine_to_coarse"),
                      coarse_classes=meta["coarse_classes"])
    shown = sample_indices(len(test), SAMPLES.get(ds, 30))
    figures.sample_predictions(test.images[shown], [classes[i] for i in test.labels[shown]],
                               [classes[i] for i in predicted[shown]], f"{name} on {ds_name} test images",
                               paths.figure(f"samples-{key}-{ds}-{seed}"), columns=SAMPLE_COLUMNS.get(ds, 6))
    efficiency_result = cost(model, images, preprocess, rt, batch_size, info["spec"].img_size)
    atomic.write_json(paths.efficiency(key, ds, seed), efficiency_result)
    return result, efficiency_result
