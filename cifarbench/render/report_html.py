"""plots/report.html: report.md rendered to one self-contained HTML file.

The Markdown is the single source; markdown-it-py renders it (CommonMark plus
tables) and every image is embedded as a data URI, so the file opens anywhere,
mailed or offline, with no network request and no folder beside it.
"""

import base64
import html
import mimetypes
from pathlib import Path

from markdown_it import MarkdownIt

from cifarbench.errors import BenchError

STYLE = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1b1b1b;
       max-width: 1000px; margin: 2em auto; padding: 0 1em; }
h1, h2, h3 { line-height: 1.25; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
th, td { border: 1px solid #d0d0d0; padding: .3em .5em; vertical-align: top; } th { background: #f3f3f3; }
/* text cells (names, recipes) wrap, so wide tables fit the page; numbers (right-aligned columns) and
   an interval stay on one line */
td { white-space: normal; } td[style*="right"] { white-space: nowrap; } td:first-child { min-width: 9em; }
/* the last resort for a table wider than the page: it scrolls inside itself, the page does not */
table { display: block; width: max-content; max-width: 100%; overflow-x: auto; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; height: auto; display: block; margin: .5em 0 .2em; }
blockquote { border-left: 4px solid #c62828; margin: 1em 0; padding: .2em 1em; background: #fff5f5; }
code { background: #f3f3f3; padding: 0 .2em; border-radius: 3px; }
em { color: #444; }
"""


def data_uri(path):
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"the report refers to {path}, which is missing: rerun the stage that draws it")
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render(markdown_text, base_dir, title="CIFARbench report"):
    """HTML for `markdown_text`; image paths are relative to base_dir and embedded as data URIs."""
    md = MarkdownIt("commonmark", {"html": False}).enable("table")

    def embedded_image(renderer, tokens, index, options, env):
        token = tokens[index]
        token.attrSet("src", data_uri(Path(base_dir) / token.attrGet("src")))
        return renderer.image(tokens, index, options, env)

    md.add_render_rule("image", embedded_image)
    body = md.render(markdown_text)
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n"
    )
