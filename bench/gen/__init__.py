"""Pieces of the benchmark generator (datasets, models, LR policies); see ../gen_runs.py."""
