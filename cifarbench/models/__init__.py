"""Models: timm models by name (build, freeze, features), the checks that only timm can answer, checkpoints
that rebuild their model, and inference on the device. Imports the foundations, data and runtime."""
