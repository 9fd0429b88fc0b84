"""Stage evaluate@<model>-<dataset>-<seed>: accuracy, calibration, confusion, sample predictions and cost on the
test split."""

from cifarbench.pipeline import evaluate, model_entry


def main(s):
    result, cost = evaluate.run(s)
    print(
        f"{s.model} on {s.dataset} (seed {s.seed}): top-1 {result['top1']:.4f}, top-5 {result['top5']:.4f}, "
        f"ECE {result['ece']:.4f} ({result['n_test']} test images); {cost['gflops']:.3g} GFLOPs, "
        f"{cost['throughput']:.0f} img/s, {cost['latency_ms']:.2f} ms/image on {cost['device']}"
    )


if __name__ == "__main__":
    model_entry.run(main, __doc__, args=("model", "dataset", "seed"))
