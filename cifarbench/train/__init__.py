"""Training: the Trainer (optimizer, schedule, epochs, DDP), timm's lr schedules, the resumable state.
Imports the foundations, data, runtime and models."""
