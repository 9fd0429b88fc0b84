"""Stage transfer-cifar100@<model>-<seed>: new 100-class head on the CIFAR-10 checkpoint, first blocks frozen."""

from cifarbench.pipeline import model_entry, recipes, tuned

STAGE = "transfer-cifar100"


def main(s):
    # imported here, not above: with compute.devices or compute.nodes > 1 this process only starts torchrun's
    # workers (model_entry), and the training's modules (timm, DVCLive) would cost it seconds for nothing
    from cifarbench.pipeline import train

    recipes.check_current(s.params, STAGE, s.model)
    recipe = tuned.recipe(s.params, STAGE, s.model)  # the recipe's, with the lr its tune stage chose
    model, init_path = train.start(s.params, STAGE, s.model, s.seed)
    train.run(s, STAGE, model, init_path, recipe=recipe)


if __name__ == "__main__":
    model_entry.run(main, __doc__, args=("model", "seed"), torchrun=True)
