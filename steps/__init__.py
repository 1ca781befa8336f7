"""Pipeline steps of the Iris classifier, one module per MLproject entry point.

Each entry point module is a thin click command over pure functions, so tests and
``steps.main`` call the functions directly instead of paying for a new process.
"""
