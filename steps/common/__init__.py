"""What every step shares: the command-line plumbing (runner, run, options), settings, errors and metric names.

The runner and the exit codes are ``iris_core``'s; this package holds only what is the steps' own.
"""
