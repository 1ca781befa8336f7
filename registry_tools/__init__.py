"""Promote, roll back and audit Iris model versions by moving Model Registry aliases.

``python -m registry_tools --help`` is the command line; ``iris_core.alias_history`` moves
the aliases for it, for the pipeline's gate and for the serving proxy's automatic rollback, so
every alias move lands in one history.
"""
