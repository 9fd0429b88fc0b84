"""Runtime: which device and precision a stage uses and why, multi-process (DDP) helpers, peak memory.
Imports the foundations only."""
