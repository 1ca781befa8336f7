"""A table's contract (features, types, value rules, label and classes, readiness) and the rules it compiles to.

``contract`` is the declaration and its document form; ``rules`` the value rules in the
words every part uses; ``iris`` the curated contract of the worked example; ``models`` how a
logged model's contract and answers are read.
"""
