"""The evaluate stage's work: accuracy, calibration and cost of one checkpoint on the test split.

Two files per model and dataset, kept apart on purpose:
- metrics/evaluate/<model>-<dataset>.json: top1, top5, ece, n_test, per_class and
  the reliability bins, all deterministic on CPU (a resumed training run can be
  compared byte for byte with an uninterrupted one);
- metrics/efficiency/<model>-<dataset>.json: params, trainable_params, gflops,
  throughput, latency_ms, peak memory, training time (read from the training
  stage's DVCLive summary) and the devices, which vary from run to run.
"""

import csv
import io

import numpy as np
import torch

from cifarbench import atomic, dataset, efficiency, engine, figures, metrics, models, paths, transforms
from cifarbench import runtime as runtimelib

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


def cost(model, info, images, preprocess, rt, batch_size, train_summary):
    """The efficiency file's content; call it last, so peak memory covers the whole stage."""
    total, _ = models.count_parameters(model)
    measured = efficiency.measure(model, images, preprocess, rt, batch_size, info["spec"].img_size)
    peak, measure = efficiency.peak_memory(rt.device)
    return {
        "params": total,
        "trainable_params": train_summary["trainable_params"],
        **measured,
        "peak_memory_mb": round(peak, 1),
        "memory_measure": measure,
        "device": rt.describe(),
        "train_seconds": train_summary["train_seconds"],
        "seconds_per_epoch": train_summary["seconds_per_epoch"],
        "epochs": train_summary["epochs_run"],
        "train_peak_memory_mb": train_summary["peak_memory_mb"],
        "train_device": train_summary["device"],
    }


def run(key, ds, params):
    """Evaluate models/<ds>/<key>.pt on data/<ds>/test.npz; writes every output of evaluate@<key>-<ds>."""
    rt = runtimelib.resolve(params.compute)
    efficiency.reset_peak_memory(rt.device)
    data_dir = paths.data_dir(ds)
    meta = dataset.load_meta(data_dir)
    test = dataset.load_split(data_dir, "test", meta)
    model, preprocess, info = engine.load_for_inference(paths.checkpoint(ds, key), rt)
    train_summary = atomic.read_json(paths.train_log(ds, key) / "metrics.json")  # missing: names the stage
    images = transforms.to_tensor(test.images, rt.device)
    batch_size = params.compute.eval_batch_size
    logits = engine.infer(model, images, preprocess, rt, batch_size)
    result, predicted, confusion = metrics.classification(logits, torch.from_numpy(test.labels), meta["classes"])
    classes, name, ds_name = meta["classes"], figures.model_name(key), figures.dataset_name(ds)

    atomic.write_json(paths.evaluation(key, ds), result)
    atomic.write_text(paths.confusion_rows(key, ds), confusion_csv(test.labels, predicted, classes))
    figures.confusion(confusion, classes, f"{name} on {ds_name} (top-1 {result['top1']:.1%})",
                      paths.figure(f"confusion-{key}-{ds}"), fine_to_coarse=meta.get("fine_to_coarse"),
                      coarse_classes=meta["coarse_classes"])
    shown = sample_indices(len(test), SAMPLES.get(ds, 30))
    figures.sample_predictions(test.images[shown], [classes[i] for i in test.labels[shown]],
                               [classes[i] for i in predicted[shown]], f"{name} on {ds_name} test images",
                               paths.figure(f"samples-{key}-{ds}"), columns=SAMPLE_COLUMNS.get(ds, 6))
    efficiency_result = cost(model, info, images, preprocess, rt, batch_size, train_summary)
    atomic.write_json(paths.efficiency(key, ds), efficiency_result)
    return result, efficiency_result
