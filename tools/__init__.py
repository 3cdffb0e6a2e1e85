"""Maintenance tools for launcher workdirs and published tables: merge, publish, rescore, plots.

Run from the repository root, e.g. ``python -m tools.plots --workdir=results/ideal``.
"""
