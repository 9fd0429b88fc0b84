"""plots/report.md from one context: the Jinja2 template report.md.j2 beside this file, its tables by tabulate.

The template holds every word of the report next to the numbers it shows; the context (built by
cifarbench/pipeline/report.py from the run's metrics and params files) holds every number and fact.
StrictUndefined: a name the context lacks stops the report stage instead of printing nothing.
"""

from pathlib import Path

import jinja2
import tabulate

TEMPLATE = Path(__file__).with_name("report.md.j2")


def pct(value):
    """0.871 -> 87.1%"""
    return f"{100 * value:.1f}%"


def pct1(value):
    """0.871 -> 87.1 (a column already says percent)"""
    return f"{100 * value:.1f}"


def points(value):
    """A difference in points, signed: +2.3"""
    return f"{100 * value:+.1f}"


def ci(value, interval):
    """A share in percent with its 95 % interval: 97.1 (96.8–97.4); a missing value reads n/a."""
    if value is None:
        return "n/a"
    return f"{100 * value:.1f} ({100 * interval[0]:.1f}–{100 * interval[1]:.1f})"


def ci3(value, interval):
    """A 0-1 measure (AUROC, FPR) with its 95 % interval: 0.912 (0.905–0.918)."""
    return f"{value:.3f} ({interval[0]:.3f}–{interval[1]:.3f})"


def p_value(value):
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def table(header, align, rows):
    """A Markdown (pipe) table: align has one letter per column, l or r. Cells are shown as given."""
    aligns = {"l": "left", "r": "right"}
    return tabulate.tabulate(
        rows, headers=header, tablefmt="pipe", colalign=[aligns[a] for a in align], disable_numparse=True
    )


def environment():
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE.parent),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        autoescape=False,  # Markdown, not HTML: report_html escapes what it renders
        extensions=["jinja2.ext.do"],
    )
    env.filters.update(pct=pct, pct1=pct1, points=points, ci=ci, ci3=ci3, p=p_value)
    env.globals["table"] = table
    return env


def render(context):
    """report.md's text for a context (cifarbench.pipeline.report.Report.context)."""
    text = environment().get_template(TEMPLATE.name).render(**context)
    # a section's blocks leave runs of blank lines where an optional part is absent: one is enough
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.strip() + "\n"
