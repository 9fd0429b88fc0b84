"""report.html: the Markdown report as one self-contained page, checked in headless Chromium."""

import base64
import re

import numpy as np
import pytest
from PIL import Image

from cifarbench.errors import BenchError
from cifarbench.render import report_html

MARKDOWN = """# Report

| Model | top-1 |
| --- | ---: |
| ResNet-18 | 97.6% |

![first figure](figures/a.png)

*The first figure.*

![second figure](figures/b.png)

*The second figure.*
"""


@pytest.fixture
def report_dir(tmp_path):
    (tmp_path / "figures").mkdir()
    rng = np.random.default_rng(0)
    for name, size in (("a", (60, 40)), ("b", (300, 120))):
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
            tmp_path / "figures" / f"{name}.png"
        )
    return tmp_path


def test_images_are_embedded_and_nothing_is_fetched(report_dir):
    html = report_html.render(MARKDOWN, report_dir)
    sources = re.findall(r'<img src="([^"]+)" alt="([^"]*)"', html)
    assert [alt for _, alt in sources] == ["first figure", "second figure"]
    for (src, _), name in zip(sources, "ab"):
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]) == (report_dir / "figures" / f"{name}.png").read_bytes()
    assert '<th style="text-align:right">top-1</th>' in html and "<em>The first figure.</em>" in html
    assert not re.search(r'(src|href)="(?!data:)', html) and "http" not in html


def test_a_missing_figure_is_a_clear_error(report_dir):
    (report_dir / "figures" / "b.png").unlink()
    with pytest.raises(BenchError, match=r"figures/b.png, which is missing"):
        report_html.render(MARKDOWN, report_dir)


def test_every_image_decodes_in_headless_chromium(report_dir, chromium):
    from browser import decoded_images

    path = report_dir / "report.html"
    path.write_text(report_html.render(MARKDOWN, report_dir))
    images = decoded_images(chromium, path)
    assert [(i["alt"], i["ok"], i["width"], i["height"]) for i in images] == [
        ("first figure", True, 60, 40),
        ("second figure", True, 300, 120),
    ]
    assert all(i["shown"] > 0 for i in images)


WIDE = (
    "| Model | Dataset | Params | Trainable | GFLOPs | Throughput (img/s) | Latency (ms) | Peak mem. eval (MiB) "
    "| Peak mem. train (MiB) | s/epoch | Train total (s) |\n| --- | --- |"
    + " ---: |" * 9
    + "\n"
    + "".join(
        f"| DINOv2 ViT-B/14 (random init, {n} blocks, width 192, 3 heads, patch 7) | CIFAR-100 | 1.83 M | 0.91 M "
        "| 0.062 | 1,273 | 9.80 | 1,024 | 1,051 | 2.3 | 23 |\n"
        for n in (2, 4)
    )
)


def test_a_wide_table_with_long_names_fits_the_page_at_1400_px(tmp_path, chromium):
    """The report's widest table (efficiency, 11 columns) with the demo's long display names: names wrap,
    numbers do not, and nothing reaches past the page's column."""
    from browser import table_fit

    path = tmp_path / "report.html"
    path.write_text(report_html.render("# Report\n\n" + WIDE, tmp_path))
    fit = table_fit(chromium, path)
    assert not fit["page_overflow"]
    assert [(t["overflow"] <= 0, t["past_body"] <= 0) for t in fit["tables"]] == [(True, True)], fit
