"""Names and defaults that several steps share, kept in one place so they cannot drift apart."""

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
LABEL = "species"
CLASSES = ("setosa", "versicolor", "virginica")

DEFAULT_DATA_PATH = "data/iris.csv"
DEFAULT_MODEL_NAME = "iris"
TRAINING_EXPERIMENT = "iris-classification"
MONITORING_EXPERIMENT = "iris-monitoring"
BATCH_EXPERIMENT = "iris-batch-scoring"
CHAMPION = "champion"
CHALLENGER = "challenger"

# Run artifacts that later steps read back by run ID instead of by local path.
TRAIN_SPLIT_ARTIFACT = "data/train.csv"
HOLDOUT_SPLIT_ARTIFACT = "data/holdout.csv"
MODEL_ARTIFACT = "model"
