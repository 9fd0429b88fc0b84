"""Stage transfer-cifar100@<model>: new 100-class head on the CIFAR-10 checkpoint, first blocks frozen."""

import argparse

import torch

from cifarbench import MODELS, checkpoint, dataset, distributed, models, paths, training
from cifarbench import params as paramslib
from cifarbench.errors import exit_on_bench_error


@exit_on_bench_error
def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", choices=MODELS)
    key = parser.parse_args().model
    params = paramslib.load()
    if distributed.relaunch_under_torchrun(params.compute.devices):
        return  # compute.devices > 1: the torchrun workers ran this stage
    spec, recipe = params.model(key), params.recipe("transfer", key)
    n_classes = len(dataset.load_meta(paths.data_dir("cifar100"))["classes"])
    torch.manual_seed(params.seed)
    init_path = paths.checkpoint("cifar10", key) if recipe.init == "cifar10" else None
    if init_path:
        model, _ = checkpoint.load_model(init_path)
        model.reset_classifier(n_classes)
    else:  # straight from the model's own (ImageNet) weights, skipping CIFAR-10
        model = models.create(spec, num_classes=n_classes, key=key)
    frozen = models.freeze(model, recipe.freeze_blocks)
    total, trainable = models.count_parameters(model)
    print(f"init from {recipe.init}; frozen: stem + {recipe.freeze_blocks} blocks ({len(frozen)} modules); "
          f"{trainable:,} of {total:,} parameters trainable")
    training.run(stage="transfer-cifar100", key=key, spec=spec, recipe=recipe, params=params, model=model,
                 data_dir=paths.data_dir("cifar100"), checkpoint_path=paths.checkpoint("cifar100", key),
                 log_dir=paths.train_log("cifar100", key), state_path=paths.training_state("cifar100", key),
                 init_path=init_path)


if __name__ == "__main__":
    main()
