"""Rendering: every figure in one style, display names and colours, report.md to a self-contained HTML file.
Imports the foundations only."""
