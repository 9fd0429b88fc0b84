"""Checks of params.yaml that need more than the YAML: can timm build each model as asked?

params.py validates types and ranges without importing torch; the stage
entry runs these too, before any work, so a wrong architecture name, an
img_size that is not a multiple of a ViT's patch, or freeze_blocks beyond a
model's depth stops the stage with one line naming the key.
"""

from cifarbench.models import timm_models


def check(params):
    """Raise BenchError naming the key for the first thing that cannot be built as asked."""
    for key in params.keys:
        timm_models.check_spec(key, params.model(key), params.recipe("transfer", key).freeze_blocks)
