"""Experiment grids run by ``launch.experiments``: the grid as data, the runner, the report."""
