"""Analyses over a store, each over the stored tables.

``stats`` (statistics), ``compare`` (group comparisons), ``diff`` (two traces side by side) and
``sweep_analysis`` (load sweeps). Each module imports scipy only when it needs it.
"""
