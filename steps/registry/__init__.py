"""The registry as the steps read it: a model URI checked and resolved, and what a version reads and answers."""
