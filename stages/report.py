"""Stage report: metrics/summary.json and cost.json, comparison figures, plots/report.md and report.html."""

from cifarbench import paths
from cifarbench.pipeline import entry, report
from cifarbench.render import styles


def main(s):
    summary = report.build(s.params)
    for ds, rows in summary.items():
        print(styles.dataset_name(ds) + ": " + ", ".join(f"{key} {row['top1']:.1%}" for key, row in rows.items()))
    print(f"report: {paths.REPORT.resolve()} and {paths.REPORT_HTML.resolve()} (self-contained)")


if __name__ == "__main__":
    entry.run(main, __doc__)
