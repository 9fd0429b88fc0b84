"""Evaluation algorithms on outputs and features: metrics, statistics, OOD scores, the linear probe, accuracy
under corruption, inference cost. Imports the foundations, data, runtime and models (never train)."""
