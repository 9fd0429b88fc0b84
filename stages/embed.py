"""Stage embed@<model>-<dataset>-<seed>: penultimate features → k-NN accuracy and a UMAP picture."""

from cifarbench import embedding, torchstage


def main(s):
    result = embedding.run(s)
    print(f"{s.model} on {s.dataset} (seed {s.seed}): {result['knn_k']}-NN accuracy of features "
          f"{result['knn_top1']:.4f}")


if __name__ == "__main__":
    torchstage.run(main, __doc__, args=("model", "dataset", "seed"))
