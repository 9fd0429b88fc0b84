"""How the models of params.yaml's registry are shown: display names and colours.

Figures, tables and the CLI take names and colours from here, never from a
list in code: a model added under `models:` gets both. A colour belongs to a
model's position in the registry, so it is the same in every figure; a name
says what ran (the demo's 4-block random-init ViT is not called DINOv2 ViT-B/14).
"""

DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
# matplotlib's tab10, in order: ten colours that stay distinct for colour-blind readers in most pairs
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
# timm kwargs that change how a model is regularised, not what it is: no need to mention them
REGULARISATION_KWARGS = {"drop_rate", "drop_path_rate", "drop_block_rate", "proj_drop_rate", "attn_drop_rate"}
# how the common architecture kwargs read in a name; others show as `key value`
KWARG_WORDS = {"depth": "{} blocks", "embed_dim": "width {}", "num_heads": "{} heads", "patch_size": "patch {}"}


def dataset_name(dataset):
    return DATASET_NAMES.get(dataset, dataset)


def base_name(entry):
    """The entry's `name`, else the timm architecture without its pretrained tag (`resnet10t.c3_in1k` -> resnet10t)."""
    return entry.name or entry.arch.split(".", 1)[0]


def display_name(entry):
    """The base name, plus what makes this run differ from the named model: random init, changed architecture."""
    notes = []
    if entry.pretrained is False:
        notes.append("random init")
    arch = {k: v for k, v in entry.kwargs.items() if k not in REGULARISATION_KWARGS}
    notes += [KWARG_WORDS.get(k, k + " {}").format(v) for k, v in arch.items()]
    return f"{base_name(entry)} ({', '.join(notes)})" if notes else base_name(entry)


def short_name(entry):
    """The base name alone, for crowded axes and legends where the full display name does not fit."""
    return base_name(entry)


def colours(params):
    """{model key: colour}: the registry position picks the colour, so a model keeps it everywhere."""
    return {key: PALETTE[i % len(PALETTE)] for i, key in enumerate(params.keys)}


def names(params):
    """{model key: display name} in registry order."""
    return {key: display_name(params.models[key]) for key in params.keys}


class Styles:
    """What a figure needs to show a model: its name and colour (built from the registry)."""

    def __init__(self, names_, colours_):
        self.names, self.colours = dict(names_), dict(colours_)

    @classmethod
    def of(cls, params):
        return cls(names(params), colours(params))

    def name(self, key):
        return self.names.get(key, key)

    def colour(self, key):
        return self.colours.get(key, "0.5")
