"""Capture into an artifact store: every answered row and every label, as Parquet files MLflow's stores hold.

``python -m serving --capture-uri URI`` turns it on (and ``POST /feedback`` with it). The
layout of the capture is ``iris_core.capture``'s; the pieces here, each in a thread or a
module of its own so that nothing of it runs on the request path beyond a queue append:

- ``recorder``: the seam the proxy calls, once per answered request and once per accepted
  ``POST /feedback``; ``/health`` and ``/metrics``; start and shutdown;
- ``writer``: the writer thread, open files by model version, closed by age or rows;
- ``columns``: open files held column by column, and the Parquet tables they become;
- ``spool``: the local directory where closed files wait for the store, and labels' journals;
- ``uploader``: the thread that moves closed files into the store, oldest first;
- ``stores``: a local directory, a tracking server's ``mlflow-artifacts:`` store over its REST
  API, or MLflow's own artifact repositories (``s3://``, ``gs://``...) in a helper process.

Nothing is imported here, so that the command line can name the options without loading pyarrow.
"""
