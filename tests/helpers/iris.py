"""The Iris contract's names as the tests write them: its features, label and classes."""

from iris_core.table.iris import IRIS

FEATURES = IRIS.feature_names
LABEL = IRIS.label
CLASSES = IRIS.classes
