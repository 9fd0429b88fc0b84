"""Stage embed@<model>-<dataset>: penultimate features of the test split → kNN accuracy and a UMAP picture."""

import argparse

import numpy as np

from cifarbench import DATASETS, MODELS, atomic, dataset, embedding, engine, figures, paths
from cifarbench import params as paramslib
from cifarbench import runtime as runtimelib
from cifarbench.errors import exit_on_bench_error


@exit_on_bench_error
def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", choices=MODELS)
    parser.add_argument("dataset", choices=DATASETS)
    args = parser.parse_args()
    params = paramslib.load()
    rt = runtimelib.resolve(params.compute)
    data_dir = paths.data_dir(args.dataset)
    meta = dataset.load_meta(data_dir)
    train, test = dataset.load_split(data_dir, "train", meta), dataset.load_split(data_dir, "test", meta)
    model, preprocess, _ = engine.load_for_inference(paths.checkpoint(args.dataset, args.model), rt)
    batch = params.compute.eval_batch_size
    test_features = embedding.features(model, test.images, preprocess, rt, batch)
    train_features = embedding.features(model, train.images, preprocess, rt, batch)
    result = embedding.knn(train_features, train.labels, test_features, test.labels)
    points = embedding.umap_2d(test_features, params.seed)

    # CIFAR-100's 100 colours would be unreadable: colour by its 20 coarse groups
    colours, names = (test.coarse, meta["coarse_classes"]) if test.coarse is not None else (test.labels, meta["classes"])
    atomic.save_npz(paths.embedding_points(args.model, args.dataset), points=points, colours=colours,
                    labels=test.labels, names=np.array(names))
    figures.umap_scatter(points, colours, names,
                         f"{figures.model_name(args.model)} features, {args.dataset} test (UMAP)",
                         paths.figure(f"umap-{args.model}-{args.dataset}"))
    atomic.write_json(paths.embedding_metrics(args.model, args.dataset), result)
    print(f"{args.model} on {args.dataset}: {result['knn_k']}-NN accuracy of features {result['knn_top1']:.4f}")


if __name__ == "__main__":
    main()
