"""The embed stage's work: pre-logit features of a checkpoint, their k-NN accuracy, and a 2-D UMAP."""

import numpy as np

from cifarbench import atomic, paths
from cifarbench.data import dataset, transforms
from cifarbench.eval import metrics
from cifarbench.models import inference, timm_models
from cifarbench.render import figures, styles

KNN_K = 20  # DINO's k-NN protocol uses k = 20


def features(model, images_nhwc, preprocess, runtime, batch_size):
    """(N, D) float32 numpy features of uint8 HWC images."""
    images = transforms.to_tensor(images_nhwc, runtime.device)
    out = inference.infer(model, images, preprocess, runtime, batch_size, fn=lambda x: timm_models.features(model, x))
    return out.cpu().numpy()


def knn(train_features, train_labels, test_features, test_labels, k=KNN_K):
    """(the embed metrics file's content, each test image's k-NN correctness)."""
    correct = metrics.knn_correct(train_features, train_labels, test_features, test_labels, k=k)
    result = {
        "knn_top1": float(correct.mean()),
        "knn_k": min(k, len(train_labels)),
        "feature_dim": int(train_features.shape[1]),
    }
    return result, correct


def _import_umap_with_numba_cache():
    """Import umap-learn with numba's on-disk cache switched on for its functions.

    umap-learn asks numba to cache none of its compiled functions, so every
    process spends ~20 s of CPU compiling the same code; each embed stage is a
    fresh process. Defaulting `cache=True` while umap (and pynndescent) define
    their functions lets the first stage compile and the others load (~4 s).
    Functions numba cannot cache still work: numba only warns, and we silence that.
    """
    import sys
    import warnings

    if "umap" in sys.modules:
        return sys.modules["umap"]
    import numba

    originals = numba.njit, numba.jit

    def with_cache(decorator):
        def wrapper(*args, **kwargs):
            kwargs.setdefault("cache", True)
            return decorator(*args, **kwargs)

        return wrapper

    numba.njit, numba.jit = with_cache(numba.njit), with_cache(numba.jit)
    try:
        import umap
    finally:
        numba.njit, numba.jit = originals
    warnings.filterwarnings("ignore", category=numba.NumbaWarning)
    warnings.filterwarnings("ignore", message="n_jobs value .* overridden", category=UserWarning)
    return umap


def umap_2d(features_, seed):
    """UMAP of the features (not logits) to 2-D; seeded, so the picture is reproducible.

    numba's OpenMP threading layer, the first time it runs, sets the process's OpenMP thread count, which torch
    shares, to numba's own (every core): a process that ran with OMP_NUM_THREADS=1 (`make test`'s workers, a
    user's choice) would run every later torch op on every core (measured: the benchmark's stages after its first
    UMAP ran at 2 threads on 2 busy cores, about half as fast). The count torch had is put back afterwards.
    """
    import torch

    threads = torch.get_num_threads()
    umap = _import_umap_with_numba_cache()
    n_neighbors = max(2, min(15, len(features_) - 1))
    reducer = umap.UMAP(n_components=2, n_neighbors=n_neighbors, min_dist=0.1, random_state=seed)
    try:
        return reducer.fit_transform(np.asarray(features_, dtype=np.float32)).astype(np.float32)
    finally:
        torch.set_num_threads(threads)


def warm_numba_cache():
    """Compile umap-learn's numba functions into the on-disk cache now (`make setup` calls this).

    The first UMAP in a fresh environment otherwise spends ~40 s of a 2-core
    machine compiling library code in the first embed stage. A small fit takes
    umap's path for inputs under 4,096 points (the stand-in's test splits);
    CIFAR's 10,000-image splits compile the nearest-neighbour descent part
    once, on first use.
    """
    umap_2d(np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32), seed=0)


def run(s):
    """Features of models/<dataset>/<model>-<seed>.pt: k-NN accuracy (train split as the bank), UMAP of the
    test split."""
    key, ds, seed, rt = s.model, s.dataset, s.seed, s.runtime
    data_dir = paths.data_dir(ds)
    meta = dataset.load_meta(data_dir)
    train, test = dataset.load_split(data_dir, "train", meta), dataset.load_split(data_dir, "test", meta)
    model, preprocess, _ = inference.load(paths.checkpoint(ds, key, seed), rt)
    batch = s.params.compute.eval_batch_size
    test_features = features(model, test.images, preprocess, rt, batch)
    result, knn_correct = knn(
        features(model, train.images, preprocess, rt, batch), train.labels, test_features, test.labels
    )
    points = umap_2d(test_features, s.params.seed)
    # CIFAR-100's 100 colours would be unreadable: colour by its 20 coarse groups
    colours, names = (
        (test.coarse, meta["coarse_classes"]) if test.coarse is not None else (test.labels, meta["classes"])
    )
    atomic.save_npz(
        paths.embedding_points(key, ds, seed),
        points=points,
        colours=colours,
        labels=test.labels,
        names=np.array(names),
        knn_correct=knn_correct,  # per test image: what summary.json's knn_top1_ci resamples
    )
    figures.umap_scatter(
        points,
        colours,
        names,
        f"{styles.display_name(s.params.models[key])} features, {styles.dataset_name(ds)} test (UMAP)",
        paths.figure(f"umap-{key}-{ds}-{seed}"),
    )
    atomic.write_json(paths.embedding_metrics(key, ds, seed), result)
    return result


if __name__ == "__main__":
    warm_numba_cache()
