"""Stage train-cifar10@<model>: fine-tune the model on CIFAR-10, keep the best-validation checkpoint."""

import argparse

import torch

from cifarbench import MODELS, dataset, distributed, models, paths, training
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
    spec = params.model(key)
    meta = dataset.load_meta(paths.data_dir("cifar10"))
    torch.manual_seed(params.seed)  # the new head's (or the whole model's) initial weights
    model = models.create(spec, num_classes=len(meta["classes"]), key=key)
    training.run(stage="train-cifar10", key=key, spec=spec, recipe=params.recipe("train", key),
                 params=params, model=model, data_dir=paths.data_dir("cifar10"),
                 checkpoint_path=paths.checkpoint("cifar10", key), log_dir=paths.train_log("cifar10", key),
                 state_path=paths.training_state("cifar10", key))


if __name__ == "__main__":
    main()
