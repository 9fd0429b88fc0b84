"""README.md and docs/*.md stay true to the repository (fast: no DVC, no model).

- Every relative link resolves: the file or folder exists and, for `page.md#anchor`, a heading on
  that page makes that anchor (GitHub's rule). External http(s) links are not fetched.
- Every docs page is linked from README's map and links back to README.
- docs/parameters.md documents every key params.yaml holds, and names no key that does not exist.
  The convention: each key is a table row whose first cell is the key in backticks, written in
  full from the top of params.yaml, `<key>` standing for a model key (`models.<key>.arch`) or, in
  a recipe, for `defaults` or a model key (`train.<key>.lr` covers `train.defaults.lr` and
  `train.resnet18.lr`). The transfer sections take every train recipe key, so `transfer.<key>.lr`
  is documented as `train.<key>.lr`; keys only transfer has are `transfer.<key>.init`.
"""

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from cifarbench import params as paramslib

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
PARAMETERS = DOCS / "parameters.md"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
MODEL = "<key>"  # how docs/parameters.md writes a model key (and, in recipes, `defaults` too)
RECIPES = ("train", "transfer")

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+).*?\1")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def prose_lines(text):
    """(line number, line) outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def slug(heading):
    """GitHub's anchor for a heading: lowercase, punctuation dropped (not hyphens), spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts by its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page):
    """Every anchor the headings of `page` make; repeated headings get -1, -2, ... as on GitHub."""
    seen, out = {}, set()
    for _, line in prose_lines(page.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if match:
            base = slug(match.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(page):
    """(line number, target) of every Markdown link on `page` (its text may wrap lines), code left out."""
    lines = page.read_text(encoding="utf-8").splitlines()
    prose = dict(prose_lines("\n".join(lines)))
    text = "\n".join(
        INLINE_CODE.sub(lambda m: " " * len(m.group(0)), prose.get(n, "")) for n in range(1, len(lines) + 1)
    )
    for match in LINK.finditer(text):
        yield text.count("\n", 0, match.start()) + 1, match.group(1)
    for number, line in prose.items():
        ref = REFERENCE.match(line)
        if ref:
            yield number, ref.group(1)


def broken(page, target):
    """Why a link from `page` to `target` does not resolve, or None when it does."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http(s), mailto: not fetched
        return None
    path, _, anchor = target.partition("#")
    file = page if not path else (ROOT / path.lstrip("/") if path.startswith("/") else page.parent / path)
    file = file.resolve()
    if not file.exists():
        return f"{file.relative_to(ROOT) if file.is_relative_to(ROOT) else file} does not exist"
    if anchor:
        if file.suffix != ".md":
            return f"#{anchor} points into {file.name}, which has no Markdown headings"
        if anchor not in anchors(file):
            return f"no heading on {file.relative_to(ROOT)} makes #{anchor}"
    return None


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    found = list(links(page))
    assert found, f"{page.name}: no links found (is the link pattern still right?)"
    problems = [
        f"{page.relative_to(ROOT)}:{n}: ({target}) {why}" for n, target in found if (why := broken(page, target))
    ]
    assert not problems, "broken links:\n" + "\n".join(problems)


def linked_pages(page):
    return {(page.parent / t.partition("#")[0]).resolve() for _, t in links(page) if t.partition("#")[0]}


def test_readme_links_every_docs_page_and_each_links_back():
    pages = sorted(DOCS.glob("*.md"))
    assert pages, "docs/ holds no pages"
    unlisted = [p.name for p in pages if p.resolve() not in linked_pages(README)]
    assert not unlisted, f"README.md's documentation map does not link {unlisted}"
    orphans = [p.name for p in pages if README.resolve() not in linked_pages(p)]
    assert not orphans, f"these pages do not link back to README.md: {orphans}"


def test_slug_follows_githubs_rule():
    assert slug("The report's files") == "the-reports-files"
    assert slug("Recipes: `train` and `transfer`") == "recipes-train-and-transfer"
    assert slug("Real CIFAR-10 images") == "real-cifar-10-images"
    assert slug("compute.sync_bn and [DDP](clusters.md)") == "computesync_bn-and-ddp"


# --- parameters -------------------------------------------------------------------------------


def _fields(obj):
    """Dotted field names of a validated params section, nested sections (augment) opened."""
    for name in type(obj).model_fields:
        value = getattr(obj, name)
        if isinstance(value, BaseModel):
            yield from (f"{name}.{sub}" for sub in _fields(value))
        else:
            yield name


def _raw_leaves(raw, parsed, path=()):
    """(path in params.yaml, field name) of every leaf under a raw mapping, following the parsed section."""
    for name, value in raw.items():
        sub = getattr(parsed, name)
        if isinstance(sub, BaseModel) and isinstance(value, dict):
            for inner, field in _raw_leaves(value, sub, (*path, name)):
                yield inner, f"{name}.{field}"
        else:
            yield (*path, name), name


def documented_name(section, field, train_fields):
    """How docs/parameters.md writes a key: `seed`, `data.dir`, `models.<key>.arch`, `train.<key>.lr`."""
    if section == "models":
        return f"models.{MODEL}.{field}"
    if section in RECIPES:
        return f"{'train' if field in train_fields else section}.{MODEL}.{field}"
    return f"{section}.{field}" if field else section


def params_keys(path=ROOT / "params.yaml"):
    """{documented name: a params.yaml spelling of it} for every key params.yaml holds or its sections accept."""
    raw = paramslib.read_yaml(path)
    p = paramslib.parse(raw, source=str(path))
    some = p.keys[0]
    train_fields = set(_fields(p.recipe("train", some)))
    keys = {}

    def add(section, field, spelled):
        keys.setdefault(documented_name(section, field, train_fields), spelled)

    for section, value in raw.items():
        if section == "models":
            for key, entry in value.items():
                for where, field in _raw_leaves(entry, p.models[key]):
                    add(section, field, ".".join(("models", key, *where)))
            for field in _fields(p.models[some]):  # optional fields too (pretrained, name)
                add(section, field, f"models.{some}.{field}")
        elif section in RECIPES:
            for key, layer in value.items():
                recipe = p.recipe(section, some if key == paramslib.DEFAULTS else key)
                for where, field in _raw_leaves(layer or {}, recipe):
                    add(section, field, ".".join((section, key, *where)))
            for field in _fields(p.recipe(section, some)):
                add(section, field, f"{section}.{paramslib.DEFAULTS}.{field}")
        else:
            parsed = getattr(p, section)
            if isinstance(parsed, BaseModel):
                for where, field in _raw_leaves(value, parsed):
                    add(section, field, ".".join((section, *where)))
                for field in _fields(parsed):
                    add(section, field, f"{section}.{field}")
            else:
                add(section, "", section)
    return keys


def documented_keys(page=PARAMETERS):
    """{key: line number} of every table row on `page` whose first cell is one backticked name."""
    out = {}
    for number, line in prose_lines(page.read_text(encoding="utf-8")):
        cells = re.split(r"(?<!\\)\|", line.strip())
        if len(cells) < 3 or cells[0].strip():  # a table row starts with |
            continue
        match = re.fullmatch(r"`([^`]+)`", cells[1].strip())
        if match:
            out[match.group(1)] = number
    return out


def test_params_keys_follow_the_convention():
    keys = params_keys()
    assert {
        "seed",
        "data.source",
        "models.<key>.arch",
        "models.<key>.pretrained",
        "train.<key>.lr",
        "train.<key>.augment.flip",
        "transfer.<key>.freeze_blocks",
    } <= set(keys), sorted(keys)
    assert not any(k.startswith("transfer.") and k.endswith(".lr") for k in keys)  # a train key
    assert not any(".kwargs." in k for k in keys)  # timm's arguments, not params keys


def test_every_params_key_is_documented():
    documented = documented_keys()
    missing = [
        f"{spelled} (add a row `{name}` to docs/parameters.md)"
        for name, spelled in params_keys().items()
        if name not in documented
    ]
    assert not missing, "params.yaml keys without a row on docs/parameters.md:\n" + "\n".join(missing)


def test_the_parameters_page_names_only_real_keys():
    keys = params_keys()
    stale = [f"docs/parameters.md:{n}: `{name}`" for name, n in documented_keys().items() if name not in keys]
    assert not stale, "rows naming keys params.yaml does not accept:\n" + "\n".join(stale)
