"""Stage train-cifar10@<model>-<seed>: fine-tune the model on CIFAR-10, keep the best-validation checkpoint."""

import torch

from cifarbench import paths
from cifarbench.data import dataset
from cifarbench.models import timm_models
from cifarbench.pipeline import model_entry, recipes, train


def main(s):
    recipes.check_current(s.params, "train-cifar10", s.model)
    classes = dataset.load_meta(paths.data_dir("cifar10"))["classes"]
    torch.manual_seed(s.seed)  # the new head's (or the whole model's) initial weights
    model = timm_models.create(s.params.model(s.model), num_classes=len(classes), key=s.model)
    train.run(s, "train-cifar10", model)


if __name__ == "__main__":
    model_entry.run(main, __doc__, args=("model", "seed"), torchrun=True)
