"""Every configured model builds, runs, embeds and freezes, at a tiny size."""

import pytest
import torch
from conftest import ROOT, committed_params, tiny_params

from cifarbench import params
from cifarbench.models import timm_models

MODELS = list(committed_params()["models"])  # the registry: every configured model is tested


@pytest.fixture(scope="module")
def tiny():
    return params.parse(tiny_params())


@pytest.mark.parametrize("key", MODELS)
def test_tiny_model_forward_features_and_freeze(tiny, key):
    spec = tiny.model(key)
    torch.manual_seed(0)
    model = timm_models.create(spec, num_classes=10, key=key).eval()
    x = torch.randn(2, 3, spec.img_size, spec.img_size)
    assert model(x).shape == (2, 10)
    feats = timm_models.features(model, x)
    assert feats.shape == (2, model.num_features)  # pre-logits, not the 10 logits
    mean, std = timm_models.normalization(model)
    assert len(mean) == 3 and len(std) == 3

    model.reset_classifier(100)
    total, trainable_before = timm_models.count_parameters(model)
    frozen = timm_models.freeze(model, 1)
    _, trainable_after = timm_models.count_parameters(model)
    assert frozen and trainable_after < trainable_before
    head = [p for n, p in model.named_parameters() if n.startswith(("fc.", "classifier.", "head."))]
    assert head and all(p.requires_grad for p in head)
    timm_models.train_mode(model)
    modules = dict(model.named_modules())
    assert all(not modules[name].training for name in frozen)


@pytest.mark.parametrize("key", MODELS)
def test_real_architecture_structure(key):
    """The committed (full-size) architectures: depth and patch, built on the meta device."""
    spec = params.load(ROOT / "params.yaml").model(key)
    with torch.device("meta"):
        model = timm_models.create(spec, num_classes=10, pretrained=False)
    assert timm_models.block_count(model) == {"resnet18": 4, "efficientnet_b0": 7, "dinov2_vitb14": 12}[key]
    assert timm_models.patch_size(model) == (14 if key == "dinov2_vitb14" else None)


def test_missing_local_weights_file_is_a_clear_error(tiny, tmp_path):
    from cifarbench.errors import BenchError

    spec = tiny.model("resnet18").model_copy(update={"pretrained": str(tmp_path / "nope.pth")})
    with pytest.raises(BenchError, match="models.resnet18.pretrained: weights file .* not found"):
        timm_models.create(spec, 10, key="resnet18")


def test_local_weights_file_is_loaded(tiny, tmp_path):
    spec = tiny.model("resnet18")
    source = timm_models.create(spec, num_classes=10)
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    loaded = timm_models.create(spec.model_copy(update={"pretrained": str(path)}), num_classes=10)
    torch.testing.assert_close(loaded.conv1.weight, source.conv1.weight)
