"""Pipeline steps of the Iris classifier: at the top, one module per MLproject entry point.

Each entry point module is a thin click command over pure functions, so tests and
``steps.main`` call the functions directly instead of paying for a new process. The
functions live in sub-packages named for what they hold: ``common`` (command-line plumbing,
settings, errors), ``tables``, ``training``, ``registry``, ``promotion``, ``monitoring`` and
``batch``; ``pyproject.toml``'s import contracts keep them layered.
"""
