"""Training and judging a model: the split and the fit, the pyfunc model MLflow logs, its metrics, and the
rows a version is judged on."""
