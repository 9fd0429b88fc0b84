"""Shared test helpers: the real params.yaml shrunk to a CPU smoke run.

Tests never use a second config: they load the committed params.yaml and
apply the demo's overrides plus a few that make models and data tiny.
"""

import copy
import os
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # so tests can import their helper modules

from cifarbench.demo import OVERRIDES as DEMO_OVERRIDES  # noqa: E402

# On top of the demo (real CNNs at 32 px): fewer images and epochs and a narrower ViT,
# so every stage takes seconds.
TINY_OVERRIDES = {
    **DEMO_OVERRIDES,
    "data.limit": 300,
    "data.val_size": 0.2,
    "models.dinov2_vitb14.kwargs": {"depth": 2, "embed_dim": 48, "num_heads": 2, "patch_size": 7},
    "models.dinov2_vitb14.img_size": 28,
    "transfer.dinov2_vitb14.freeze_blocks": 1,
    **{f"{stage}.{m}.epochs": 2 for stage in ("train", "transfer") for m in ("resnet18", "efficientnet_b0", "dinov2_vitb14")},
    **{f"{stage}.{m}.batch_size": 32 for stage in ("train", "transfer") for m in ("resnet18", "efficientnet_b0", "dinov2_vitb14")},
}


def set_dotted(raw, key, value):
    node = raw
    *parents, last = key.split(".")
    for part in parents:
        node = node[part]
    if isinstance(value, dict) and isinstance(node.get(last), dict):
        node[last].update(copy.deepcopy(value))  # as the demo's `++key.sub=value` overrides do
    else:
        node[last] = copy.deepcopy(value)


def committed_params():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def tiny_params(**extra):
    """The committed params with the tiny overrides (and `extra`, dotted keys with __ for dots)."""
    raw = committed_params()
    for key, value in {**TINY_OVERRIDES, **{k.replace("__", "."): v for k, v in extra.items()}}.items():
        set_dotted(raw, key, value)
    return raw


@pytest.fixture
def tiny_raw():
    return tiny_params()


@pytest.fixture(scope="session")
def chromium():
    """A headless Chromium (Selenium driver); skips with the reason when there is none (fails under CI)."""
    import browser

    driver, reason = browser.chromium_driver()
    if driver is None:
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (.ci/run installs them: check its apt-get step)")
        pytest.skip(reason)
    yield driver
    driver.quit()
