"""The evaluate stage's work: accuracy, calibration, robustness and cost of one checkpoint on the test split.

Three files per model, dataset and training seed, kept apart on purpose:
- metrics/evaluate/<model>-<dataset>-<seed>.json: top1, top5 with their 95 %
  bootstrap intervals over the test images, ece, n_test, per_class, the
  reliability bins, out-of-distribution detection of the other dataset's test
  images (`ood`), and accuracy under the CIFAR-10-C corruptions; all
  deterministic on CPU (a resumed training run can be compared byte for byte
  with an uninterrupted one);
- metrics/efficiency/<model>-<dataset>-<seed>.json: params, gflops, throughput,
  latency_ms, peak memory and the device, which vary from run to run (the report
  adds the training stage's own cost to them in metrics/cost.json);
- metrics/per_image/<model>-<dataset>-<seed>.json: each test image's predicted
  class and whether it is right, with a digest of the test set it scored (its
  labels and pixels): small and git-tracked, so `cifarbench compare` can pair two
  revisions' results image by image (format: inputs.per_image).
"""

import base64
import csv
import io

import numpy as np
import torch

from cifarbench import atomic, inputs, paths
from cifarbench.data import dataset, transforms
from cifarbench.data.sources import released_c
from cifarbench.eval import efficiency, metrics, ood, robustness, stats
from cifarbench.models import inference, timm_models
from cifarbench.paths import DATASETS
from cifarbench.render import figures, styles
from cifarbench.runtime import memory

SAMPLES = {"cifar10": 30, "cifar100": 50}  # test images in the sample-predictions figure
SAMPLE_COLUMNS = {"cifar10": 6, "cifar100": 10}


def confusion_csv(labels, predicted, classes):
    """One `actual,predicted` row per test image, in test order (DVC's confusion templates read it)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["actual", "predicted"])
    writer.writerows((classes[a], classes[p]) for a, p in zip(labels, predicted))
    return out.getvalue()


def _b64(array, dtype):
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode("ascii")


def per_image(predicted, correct, n_classes, digest, confidence=None, ood_scores=None, corruption=None):
    """The per-image predictions file's content (inputs.PER_IMAGE_FORMAT): the same bytes for the same results.

    confidence, ood_scores and corruption ((index, hits, runs)) add what comparing the other numbers pairs."""
    dtype = "uint8" if n_classes <= 256 else "uint16"
    classes = np.asarray(predicted).astype(inputs.CLASS_DTYPES[dtype])
    bits = np.packbits(np.asarray(correct, dtype=bool))
    out = {
        "format": inputs.PER_IMAGE_FORMAT,
        "n_test": int(len(classes)),
        "n_classes": int(n_classes),
        "test_digest": digest,
        "dtype": dtype,
        "predicted": base64.b64encode(classes.tobytes()).decode("ascii"),
        "correct": base64.b64encode(bits.tobytes()).decode("ascii"),
    }
    if confidence is not None:
        out["confidence"] = _b64(confidence, "<f4")
    if ood_scores is not None:
        out.update(n_out=int(len(ood_scores)), ood_scores=_b64(ood_scores, "<f4"))
    if corruption is not None:
        index, hits, runs = corruption
        out.update(
            corruption_runs=int(runs),
            corruption_images=int(len(index)),
            corruption_index=_b64(index, "<u2" if len(classes) <= 1 << 16 else "<u4"),
            corruption_hits=_b64(hits, "<u1"),
        )
    return out


def sample_indices(n_test, count):
    """Evenly spaced test images: the same ones for every model, independent of any seed."""
    return np.unique(np.linspace(0, n_test - 1, min(count, n_test)).round().astype(np.int64))


def cost(model, images, preprocess, rt, batch_size, img_size, seconds):
    """The efficiency file's content; call it last, so peak memory covers the whole stage."""
    total, _ = timm_models.count_parameters(model)
    measured = efficiency.measure(model, images, preprocess, rt, batch_size, img_size, seconds)
    peak, measure = memory.peak(rt.device)
    return {
        "params": total,
        **measured,
        "peak_memory_mb": round(peak, 1),
        "memory_measure": measure,
        "device": rt.describe(),
    }


def intervals(correct1, correct5, settings, seed):
    """95 % bootstrap intervals of top-1 and top-5 over the test images (seeded: deterministic)."""
    return {
        f"top{k}_ci": list(stats.bootstrap_ci(correct, resamples=settings.bootstrap, seed=seed))
        for k, correct in ((1, correct1), (5, correct5))
    }


def out_of_distribution(model, preprocess, rt, batch_size, logits, dataset_name):
    """The other dataset's test images as out-of-distribution (CIFAR-10 and CIFAR-100 share no class):
    (the evaluate file's `ood` entry, the headline score of each out-of-distribution image)."""
    other = next(d for d in DATASETS if d != dataset_name)
    other_dir = paths.data_dir(other)
    images = dataset.load_split(other_dir, "test", dataset.load_meta(other_dir)).images
    other_logits = inference.infer(model, transforms.to_tensor(images, rt.device), preprocess, rt, batch_size)
    result = {"dataset": other, "n_out": len(images), **ood.detection(logits, other_logits)}
    return result, ood.SCORES[ood.HEADLINE](other_logits)


def run(s):
    """Evaluate models/<dataset>/<model>-<seed>.pt on the test split; writes every output of its evaluate stage."""
    rt, key, ds, seed, params = s.runtime, s.model, s.dataset, s.seed, s.params
    memory.reset_peak(rt.device)
    data_dir = paths.data_dir(ds)
    meta = dataset.load_meta(data_dir)
    test = dataset.load_split(data_dir, "test", meta)
    model, preprocess, info = inference.load(paths.checkpoint(ds, key, seed), rt)
    images = transforms.to_tensor(test.images, rt.device)
    labels = torch.from_numpy(test.labels)
    batch_size = params.compute.eval_batch_size
    logits = inference.infer(model, images, preprocess, rt, batch_size)
    result, predicted, confusion = metrics.classification(logits, labels, meta["classes"])
    correct1, correct5 = metrics.topk_correct(logits, labels, 1), metrics.topk_correct(logits, labels, 5)
    result.update(intervals(correct1, correct5, params.evaluate, params.seed))
    result["ood"], ood_scores = out_of_distribution(model, preprocess, rt, batch_size, logits, ds)
    manifest = released_c.load(data_dir)  # the download stage's choice: released arrays or generated images
    corrupted, (corruption_index, corruption_hits) = robustness.accuracy(
        model,
        images,
        labels.to(rt.device),
        preprocess,
        rt,
        batch_size,
        params.evaluate,
        params.seed,
        released=manifest if manifest["source"] == "released" else None,
    )
    result.update(corrupted, corruption_set=manifest["set"])
    classes, name, ds_name = meta["classes"], styles.display_name(params.models[key]), styles.dataset_name(ds)

    atomic.write_json(paths.evaluation(key, ds, seed), result)
    # per test image, what summary.json's intervals resample (and ood_scores per out-of-distribution image)
    confidence = ood.SCORES[ood.HEADLINE](logits)  # the top softmax probability: calibration's confidence
    runs = sum(len(by) for by in result["corruptions"].values())
    atomic.save_npz(
        paths.predictions(key, ds, seed),
        predicted=predicted.astype(np.int16),
        correct1=correct1,
        correct5=correct5,
        confidence=confidence,
        ood_scores=ood_scores,
        corruption_index=corruption_index,
        corruption_hits=corruption_hits,
        corruption_runs=np.int64(runs),
    )
    atomic.write_json(
        paths.per_image(key, ds, seed),
        per_image(
            predicted,
            correct1,
            len(classes),
            dataset.test_digest(test.images, test.labels),
            confidence=confidence,
            ood_scores=ood_scores,
            corruption=(corruption_index, corruption_hits, runs),
        ),
    )
    atomic.write_text(paths.confusion_rows(key, ds, seed), confusion_csv(test.labels, predicted, classes))
    figures.confusion(
        confusion,
        classes,
        f"{name} on {ds_name} (top-1 {result['top1']:.1%})",
        paths.figure(f"confusion-{key}-{ds}-{seed}"),
        fine_to_coarse=meta.get("fine_to_coarse"),
        coarse_classes=meta["coarse_classes"],
    )
    shown = sample_indices(len(test), SAMPLES.get(ds, 30))
    figures.sample_predictions(
        test.images[shown],
        [classes[i] for i in test.labels[shown]],
        [classes[i] for i in predicted[shown]],
        f"{name} on {ds_name} test images",
        paths.figure(f"samples-{key}-{ds}-{seed}"),
        columns=SAMPLE_COLUMNS.get(ds, 6),
    )
    efficiency_result = cost(
        model, images, preprocess, rt, batch_size, info["spec"].img_size, params.evaluate.timing_seconds
    )
    atomic.write_json(paths.efficiency(key, ds, seed), efficiency_result)
    return result, efficiency_result
