"""The `cifarbench` command (installed with the package).

    cifarbench predict PATH... --model resnet18 --dataset cifar10 [--seed 0] [--topk 5] [--json] [--device auto]
    cifarbench compare [A [B]] [--all] [--md | --json] [--fail-if-worse]
    cifarbench sweep --slurm -S 'train.resnet18.lr=0.005,0.01' [-S ...] [--git-remote origin] [--dvc-remote NAME]
                     [--sbatch-arg=--partition=gpu ...] [--nodes N] [--name NAME] [--python PATH]
                     [--dry-run] [--wait] [TARGET...]

Run it from the project root. predict loads the pipeline's checkpoint
models/<dataset>/<model>-<seed>.pt of any model in params.yaml's registry
(the first training seed unless --seed says otherwise). compare says which
top-1 differences between two revisions (commits, branches, tags, experiments;
default HEAD and the workspace) are real (cifarbench/commands/compare.py).
sweep submits one SLURM array task per experiment of DVC's sweep syntax
(cifarbench.commands.sweep). Every user error (a bad argument, a missing
checkpoint, a file that is not a readable image, an unknown revision, a damaged
results file, a sweep that cannot run) is one line on stderr and exit status 2,
never a traceback.
"""

import argparse
import functools
import json
import sys

from cifarbench import paths
from cifarbench.errors import BenchError, exit_on_bench_error
from cifarbench.params import ParamsError
from cifarbench.paths import DATASETS


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
        "predict",
        help="classify image files with a pipeline checkpoint",
        description="Classify images (any size and mode) with models/<dataset>/<model>-<seed>.pt, preprocessed as "
        "evaluate does: RGB (transparency composited onto white), centre square, the dataset's "
        "native 32x32, then the model's own resize and normalisation.",
    )
    predict.add_argument("paths", nargs="+", metavar="PATH", help="image files, or folders whose images to classify")
    predict.add_argument("--model", required=True, help="a model key under params.yaml's models:")
    predict.add_argument("--dataset", required=True, choices=DATASETS)
    predict.add_argument(
        "--seed", type=int, default=None, help="training seed (default: the first of params.yaml's seeds)"
    )
    predict.add_argument("--topk", type=_positive, default=5, help="how many classes to print per image (default 5)")
    predict.add_argument("--json", action="store_true", help="print a JSON list instead of text")
    predict.add_argument(
        "--device", default="auto", help="auto (CUDA, else Apple's MPS, else the CPU), cpu, cuda, cuda:N or mps"
    )
    compare = commands.add_parser(
        "compare",
        help="which top-1 differences between two revisions' results are real",
        description="Compare the evaluate results of two revisions (anything `dvc metrics diff` takes: a commit, "
        "branch, tag or experiment name; default HEAD and the workspace), image by image: per model and dataset, "
        "top-1 of A and B, B - A with a paired bootstrap interval, the exact McNemar p-value, Holm's correction, "
        "with two or more training seeds a side Welch's t-test over seeds, and a verdict for B against A.",
    )
    compare.add_argument("a", nargs="?", metavar="A", help="the baseline (default HEAD)")
    compare.add_argument("b", nargs="?", metavar="B", help="what is compared against it (default: the workspace)")
    compare.add_argument(
        "--all", action="store_true", dest="every", help="compare every experiment of commit A against A (a sweep)"
    )
    output = compare.add_mutually_exclusive_group()
    output.add_argument("--md", action="store_const", const="md", dest="output", help="print a Markdown table")
    output.add_argument("--json", action="store_const", const="json", dest="output", help="print a JSON list")
    compare.add_argument(
        "--fail-if-worse", action="store_true", help="exit with status 1 when any cell is significantly worse"
    )
    sweep = commands.add_parser(
        "sweep",
        help="run a sweep as SLURM array tasks, gathered with dvc exp pull",
        description="One SLURM array task per experiment of DVC's sweep syntax (the product of the -S lists, as "
        "`dvc exp run --queue -S` makes it): each task clones the git remote at this commit, shares the project's "
        "DVC cache, runs `dvc exp run` and pushes the experiment with `dvc exp push`. See docs/clusters.md.",
    )
    sweep.add_argument("--slurm", action="store_true", help="submit to SLURM with sbatch (the only engine)")
    sweep.add_argument(
        "-S",
        "--set-param",
        action="append",
        default=[],
        metavar="KEY=VALUES",
        help="as dvc exp run -S: 'train.resnet18.lr=0.005,0.01' sweeps; repeat it for a product",
    )
    sweep.add_argument("--git-remote", default="origin", help="git remote to clone from and push to (default origin)")
    sweep.add_argument("--dvc-remote", default=None, help="DVC remote for the outputs (default: the default remote)")
    sweep.add_argument(
        "--sbatch-arg",
        action="append",
        default=[],
        metavar="OPTION",
        help="an sbatch option for every task, e.g. --sbatch-arg=--partition=gpu (repeatable)",
    )
    sweep.add_argument("--nodes", type=_positive, default=None, help="nodes per task (sets compute.nodes)")
    sweep.add_argument("--name", default=None, help="experiments are NAME-1, NAME-2, ... (default sweep-<time>)")
    sweep.add_argument("--python", default=None, help="the python whose environment tasks use (default: this one)")
    sweep.add_argument("--dry-run", action="store_true", help="print the batch script; submit nothing")
    sweep.add_argument("--wait", action="store_true", help="wait for every task; name the failed ones and their logs")
    sweep.add_argument("targets", nargs="*", metavar="TARGET", help="dvc exp run targets (default: the pipeline)")
    return parser


def _print_text(results):
    for result in results:
        print(result["path"])
        width = max(len(t["class"]) for t in result["top"])
        for rank, t in enumerate(result["top"], 1):
            print(f"  {rank}. {t['class']:<{width}}  {t['probability']:7.2%}")


def _checkpoint(args):
    """The checkpoint of --model/--seed on --dataset, the model and seed checked against params.yaml."""
    from cifarbench import params as paramslib

    params = paramslib.load()
    if args.model not in params.models:
        raise BenchError(f"--model: unknown model {args.model!r}; params.yaml's models: has {', '.join(params.keys)}")
    seed = params.seeds[0] if args.seed is None else args.seed
    if seed not in params.seeds:
        raise BenchError(f"--seed: {seed} is not one of params.yaml's seeds {params.seeds}")
    return paths.checkpoint(args.dataset, args.model, seed)


@functools.partial(exit_on_bench_error, also=(ParamsError,))
def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "compare":
        if args.every and args.b is not None:
            parser.error("compare --all takes one revision, the baseline whose experiments it compares")
        from cifarbench.commands import compare  # numpy and scipy load only once the arguments are good

        return compare.run(args.a, args.b, args.every, args.output or "text", args.fail_if_worse)
    if args.command == "predict":
        checkpoint_path = _checkpoint(args)
        from cifarbench.commands import predict  # torch and timm load only once the arguments are good

        results = predict.predict(args.paths, checkpoint_path, args.topk, args.device)
        if args.json:
            json.dump(results, sys.stdout, indent=2)
            print()
        else:
            _print_text(results)
    elif args.command == "sweep":
        if not args.slurm:
            raise BenchError(
                "cifarbench sweep runs on SLURM only: add --slurm (on one machine, DVC's own queue sweeps: "
                "dvc exp run --queue -S ..., then dvc queue start)"
            )
        from cifarbench.commands import sweep  # DVC loads only once the arguments are good

        return sweep.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
