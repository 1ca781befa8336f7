"""Promote, roll back and audit Iris model versions by moving Model Registry aliases.

``python -m registry_tools --help`` is the command line; ``registry_tools.aliases`` is the
API that the pipeline's evaluation gate uses too, so every alias move lands in one history.
"""
