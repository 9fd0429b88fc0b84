"""Stage report: metrics/summary.json, comparison figures, plots/report.md and report.html from every stage's results."""

import argparse

from cifarbench import paths, report
from cifarbench import params as paramslib
from cifarbench.errors import exit_on_bench_error


@exit_on_bench_error
def main():
    argparse.ArgumentParser(description=__doc__).parse_args()
    summary = report.build(paramslib.load())
    for ds, rows in summary.items():
        print(ds + ": " + ", ".join(f"{key} {row['top1']:.1%}" for key, row in rows.items()))
    print(f"report: {paths.REPORT.resolve()} and {paths.REPORT_HTML.resolve()} (self-contained)")


if __name__ == "__main__":
    main()
