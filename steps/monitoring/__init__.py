"""What live traffic says: the window read, the capture and the logs, drift, live performance, and
labeled production rows as training data."""
