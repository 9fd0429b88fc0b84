"""CIFARbench: a DVC pipeline comparing CNNs and ViTs on CIFAR-10 and CIFAR-100.

The package holds everything the stage scripts in `stages/` call; it never
imports from `stages/`. Foundations sit at this level (errors, params, paths,
atomic, inputs, sourcefiles: they import nothing of ours but each other), the
rest lives in rooms, each importing only the rooms below it:
data, runtime, models, train, eval, render, pipeline, commands, and cli.py on
top. docs/development.md draws the map. The models compared are params.yaml's
`models:` registry, not a list in code.
"""
