"""Batch scoring for ``batch_predict``: the job, the row checks, the model's outputs, and the pandas and Spark engines.

Nothing is imported here, so ``steps.batch.job`` checks a job without importing pandas, Arrow or MLflow.
"""
