"""CIFARbench: a DVC pipeline comparing CNNs and ViTs on CIFAR-10 and CIFAR-100.

The package holds everything the stage scripts in `stages/` call; it never
imports from `stages/`. Each module owns one thing: see README.md's layout.
The models compared are params.yaml's `models:` registry, not a list in code.
"""

DATASETS = ("cifar10", "cifar100")
