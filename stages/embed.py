"""Stage embed@<model>-<dataset>-<seed>: penultimate features → k-NN accuracy and a UMAP picture."""

from cifarbench.pipeline import embed, model_entry


def main(s):
    result = embed.run(s)
    print(
        f"{s.model} on {s.dataset} (seed {s.seed}): {result['knn_k']}-NN accuracy of features {result['knn_top1']:.4f}"
    )


if __name__ == "__main__":
    model_entry.run(main, __doc__, args=("model", "dataset", "seed"))
