"""The `cifarbench` command (installed with the package).

    cifarbench predict PATH... --model resnet18 --dataset cifar10 [--topk 5] [--json] [--device auto]

Run it from the project root: it loads the pipeline's checkpoint
models/<dataset>/<model>.pt. Every user error (a bad argument, a missing
checkpoint, a file that is not a readable image) is one line on stderr and exit
status 2, never a traceback.
"""

import argparse
import json
import sys

from cifarbench import DATASETS, MODELS, paths
from cifarbench.errors import exit_on_bench_error


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line (it prints the usage block first otherwise)."""

    def error(self, message):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _positive(text):
    value = int(text) if text.lstrip("-").isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def _parser():
    parser = _Parser(prog="cifarbench", description="CIFARbench command line.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    predict = commands.add_parser(
        "predict", help="classify image files with a pipeline checkpoint",
        description="Classify images (any size and mode) with models/<dataset>/<model>.pt, preprocessed as "
                    "evaluate does: RGB (transparency composited onto white), centre square, the dataset's "
                    "native 32x32, then the model's own resize and normalisation.")
    predict.add_argument("paths", nargs="+", metavar="PATH", help="image files, or folders whose images to classify")
    predict.add_argument("--model", required=True, choices=MODELS)
    predict.add_argument("--dataset", required=True, choices=DATASETS)
    predict.add_argument("--topk", type=_positive, default=5, help="how many classes to print per image (default 5)")
    predict.add_argument("--json", action="store_true", help="print a JSON list instead of text")
    predict.add_argument("--device", default="auto", help="auto (CUDA, else Apple's MPS, else the CPU), cpu, cuda, cuda:N or mps")
    return parser


def _print_text(results):
    for result in results:
        print(result["path"])
        width = max(len(t["class"]) for t in result["top"])
        for rank, t in enumerate(result["top"], 1):
            print(f"  {rank}. {t['class']:<{width}}  {t['probability']:7.2%}")


@exit_on_bench_error
def main(argv=None):
    args = _parser().parse_args(argv)
    if args.command == "predict":
        from cifarbench import predict  # torch and timm load only once the arguments are good

        results = predict.predict(args.paths, paths.checkpoint(args.dataset, args.model), args.topk, args.device)
        if args.json:
            json.dump(results, sys.stdout, indent=2)
            print()
        else:
            _print_text(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
