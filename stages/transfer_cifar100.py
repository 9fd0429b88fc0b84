"""Stage transfer-cifar100@<model>-<seed>: new 100-class head on the CIFAR-10 checkpoint, first blocks frozen."""

import torch

from cifarbench import paths
from cifarbench.data import dataset
from cifarbench.models import checkpoint, timm_models
from cifarbench.pipeline import model_entry, recipes, train


def main(s):
    recipes.check_current(s.params, "transfer-cifar100", s.model)
    recipe = s.params.recipe("transfer", s.model)
    n_classes = len(dataset.load_meta(paths.data_dir("cifar100"))["classes"])
    torch.manual_seed(s.seed)
    init_path = paths.checkpoint("cifar10", s.model, s.seed) if recipe.init == "cifar10" else None
    if init_path:
        model, _ = checkpoint.load_model(init_path)
        model.reset_classifier(n_classes)
    else:  # straight from the model's own (ImageNet) weights, skipping CIFAR-10
        model = timm_models.create(s.params.model(s.model), num_classes=n_classes, key=s.model)
    frozen = timm_models.freeze(model, recipe.freeze_blocks)
    total, trainable = timm_models.count_parameters(model)
    print(
        f"init from {recipe.init}; frozen: stem + {recipe.freeze_blocks} blocks ({len(frozen)} modules); "
        f"{trainable:,} of {total:,} parameters trainable"
    )
    train.run(s, "transfer-cifar100", model, init_path=init_path)


if __name__ == "__main__":
    model_entry.run(main, __doc__, args=("model", "seed"), torchrun=True)
