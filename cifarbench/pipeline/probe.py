"""The probe stage's work: linear probes and few-shot curves on frozen features.

Features come from the same inference path as evaluate (inference.infer on
the device, batched; the penultimate layer, as embed uses), and
cifarbench.eval.linear_probe fits the multinomial logistic regressions:
- from the model's starting weights (`models.<key>.pretrained`: ImageNet, a
  local file, or random init, which the report then says): `probe_top1` on all
  training images, and the few-shot curve (`probe.shots` labelled images per
  class, `probe.draws` random draws each; each k-shot probe's C chosen as
  `probe.fewshot_c` says), each with its 95 % bootstrap interval
  (`probe_top1_ci` over the test images; `fewshot_top1_ci` over the test images
  and the draws);
- from the CIFAR-10 checkpoint (first training seed): `probe_from_cifar10_top1`,
  how well the features fine-tuned on CIFAR-10 carry over to CIFAR-100 before any
  CIFAR-100 training (on CIFAR-10 itself: how linear the fine-tuned features are).
"""

import base64
import time

import numpy as np
import torch

from cifarbench import atomic, inputs, paths
from cifarbench.data import dataset, transforms
from cifarbench.errors import BenchError
from cifarbench.eval import linear_probe, stats
from cifarbench.models import inference, timm_models
from cifarbench.pipeline import recipes


def _features(model, preprocess, runtime, batch_size, split):
    images = transforms.to_tensor(split.images, runtime.device)
    out = inference.infer(model, images, preprocess, runtime, batch_size, fn=lambda x: timm_models.features(model, x))
    return out.cpu().numpy()


def features(model, preprocess, runtime, batch_size, splits):
    """{split name: (N, D) float32 features} of each split."""
    return {name: _features(model, preprocess, runtime, batch_size, split) for name, split in splits.items()}


def starting_model(s, num_classes):
    """The model as training starts it: its pretrained weights, or random init seeded by params' `seed`."""
    torch.manual_seed(s.params.seed)
    model = timm_models.create(s.params.model(s.model), num_classes=num_classes, key=s.model)
    model = inference.prepare_model(model, s.runtime).eval()
    return model, inference.preprocess_for(model, s.runtime, s.params.model(s.model).img_size)


def backend(settings, device):
    """(backend, device) the fits run on: probe.backend's choice for the stage's device."""
    try:
        return linear_probe.backend_for(settings.backend, device), device
    except ValueError as exc:
        raise BenchError(f"probe.backend: {exc}") from None


def _probe(feats, splits, settings, where):
    fitted = linear_probe.fit_probe(
        feats["train"],
        splits["train"].labels,
        feats["val"],
        splits["val"].labels,
        c_grid=settings.c_grid,
        tol=settings.tol,
        max_iter=settings.max_iter,
        backend=where[0],
        device=where[1],
    )
    correct = fitted.predict(feats["test"]) == splits["test"].labels
    return float(correct.mean()), fitted.summary(), correct


def run(s):
    """Fit every probe of probe@<model>-<dataset>; writes metrics/probe/<model>-<dataset>.json."""
    key, ds, rt, params = s.model, s.dataset, s.runtime, s.params
    recipes.check_current(params, recipes.PROBE, key)  # the spec DVC tracked for this stage
    data_dir = paths.data_dir(ds)
    meta = dataset.load_meta(data_dir)
    splits = {name: dataset.load_split(data_dir, name, meta) for name in dataset.SPLITS}
    batch = params.compute.eval_batch_size
    where = backend(params.probe, rt.device)
    start = time.perf_counter()
    model, preprocess = starting_model(s, len(meta["classes"]))
    start_features = features(model, preprocess, rt, batch, splits)
    feature_seconds = time.perf_counter() - start
    probe_top1, fit, probe_correct = _probe(start_features, splits, params.probe, where)
    try:
        curve = linear_probe.fewshot_curve(
            start_features["train"],
            splits["train"].labels,
            start_features["val"],
            splits["val"].labels,
            start_features["test"],
            splits["test"].labels,
            shots=params.probe.shots,
            draws=params.probe.draws,
            seed=params.seed,
            c_grid=params.probe.c_grid,
            tol=params.probe.tol,
            max_iter=params.probe.max_iter,
            backend=where[0],
            device=where[1],
            c_from=params.probe.fewshot_c,
        )
    except ValueError as exc:  # too few training images per class for the largest shot count
        raise BenchError(f"probe.shots: {exc}; lower probe.shots or use more images (data.limit)") from None

    model, preprocess, _ = inference.load(paths.checkpoint("cifar10", key, params.seeds[0]), rt)
    from_cifar10, from_cifar10_fit, _ = _probe(
        features(model, preprocess, rt, batch, splits), splits, params.probe, where
    )
    spec = params.model(key)
    correct = curve.pop("correct")
    resampling = {"resamples": params.evaluate.bootstrap, "seed": params.seed}
    result = {
        "weights": {True: "pretrained", False: "random init"}.get(spec.pretrained, str(spec.pretrained)),
        "probe_top1": probe_top1,
        "probe_top1_ci": list(stats.bootstrap_ci(probe_correct, **resampling)),
        "probe": fit,
        "fewshot_top1": curve["fewshot_top1"],
        "fewshot_top1_ci": {k: list(stats.draws_and_images_ci(c, **resampling)) for k, c in correct.items()},
        "fewshot_top1_std": curve["fewshot_top1_std"],
        "fewshot_c": curve["c_from"],
        "fewshot": curve,
        "probe_from_cifar10_top1": from_cifar10,
        "probe_from_cifar10": {**from_cifar10_fit, "seed": params.seeds[0]},
        "feature_dim": int(start_features["train"].shape[1]),
        "n_train": len(splits["train"]),
        "backend": where[0],
        "device": rt.describe(),
    }
    atomic.write_json(paths.probe_metrics(key, ds), result)
    test = splits["test"]
    atomic.write_json(
        paths.probe_per_image(key, ds),
        {
            "format": inputs.PROBE_FORMAT,
            "n_test": len(test),
            "test_digest": dataset.test_digest(test.images, test.labels),
            "correct": base64.b64encode(np.packbits(probe_correct).tobytes()).decode("ascii"),
        },
    )
    seconds = {"features_seconds": round(feature_seconds, 2), "total_seconds": round(time.perf_counter() - start, 2)}
    return result, seconds
