"""Each DVC stage's work, in a module named after its stage (pipeline/probe.py runs the probe stage), plus the
entries every stage script goes through (entry.py; model_entry.py for stages that run models).
Imports every room below it; never commands, cli or stages/."""
