"""Data: the in-memory dataset and its files, the sources it comes from, batched on-device transforms, the
CIFAR-10-C corruptions. Imports the foundations only."""
