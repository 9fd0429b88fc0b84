"""CIFARbench: a DVC pipeline comparing CNNs and ViTs on CIFAR-10 and CIFAR-100.

The package holds everything the stage scripts in `stages/` call; it never
imports from `stages/`. Each module owns one thing: see README.md's layout.
"""

DATASETS = ("cifar10", "cifar100")
MODELS = ("resnet18", "efficientnet_b0", "dinov2_vitb14")
