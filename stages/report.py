"""Stage report: metrics/summary.json, comparison figures and plots/report.md from every stage's results."""

import argparse

from cifarbench import paths, report
from cifarbench.errors import exit_on_bench_error


@exit_on_bench_error
def main():
    argparse.ArgumentParser(description=__doc__).parse_args()
    summary = report.build()
    for ds, rows in summary.items():
        print(ds + ": " + ", ".join(f"{key} {row['top1']:.1%}" for key, row in rows.items()))
    print(f"report: {paths.REPORT.resolve()}")


if __name__ == "__main__":
    main()
