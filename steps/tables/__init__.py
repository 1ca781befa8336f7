"""Tables as training data: loading one (Iris with scikit-learn's copy as its fallback), and checking it
against its contract."""
