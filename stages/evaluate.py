"""Stage evaluate@<model>-<dataset>: accuracy, calibration, confusion, sample predictions and cost on the test split."""

import argparse

from cifarbench import DATASETS, MODELS, evaluation
from cifarbench import params as paramslib
from cifarbench.errors import exit_on_bench_error


@exit_on_bench_error
def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", choices=MODELS)
    parser.add_argument("dataset", choices=DATASETS)
    args = parser.parse_args()
    result, cost = evaluation.run(args.model, args.dataset, paramslib.load())
    print(f"{args.model} on {args.dataset}: top-1 {result['top1']:.4f}, top-5 {result['top5']:.4f}, "
          f"ECE {result['ece']:.4f} ({result['n_test']} test images); {cost['gflops']:.3g} GFLOPs, "
          f"{cost['throughput']:.0f} img/s, {cost['latency_ms']:.2f} ms/image on {cost['device']}")


if __name__ == "__main__":
    main()
