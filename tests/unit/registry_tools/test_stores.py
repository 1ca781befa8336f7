"""Stores that are not there: a closed port, a server that never answers, a mistyped sqlite path.

Each must fail with one line and exit 1 in seconds; the command line run as a process
against a closed port or a silent server is in ``tests/integration/registry_tools/test_stores.py``.
"""

import functools
import http.server
import os
import threading

from iris_core.tracking import HTTP_DEFAULTS, bound_http_retries
from tests.helpers.registry_checks import assert_one_line_error


class QuietFiles(http.server.SimpleHTTPRequestHandler):
    """A plain file server (an empty directory): 200 for /, 404 for MLflow's API."""

    def log_message(self, *args):
        pass


def test_a_web_server_that_is_not_mlflow_is_reported_in_one_line(run, tmp_path):
    handler = functools.partial(QuietFiles, directory=str(tmp_path))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as web:
        thread = threading.Thread(target=web.serve_forever, daemon=True)
        thread.start()
        try:
            result = run("--tracking-uri", f"http://127.0.0.1:{web.server_address[1]}", "list")
        finally:
            web.shutdown()
            thread.join(timeout=10)
    assert_one_line_error(
        result, 1, "answered 404 for /api/2.0/mlflow/registered-models/get", "is the tracking URI an MLflow server?"
    )


def test_a_missing_sqlite_database_is_reported_and_not_created(run, tmp_path):
    path = tmp_path / "typo" / "mlflow.db"
    result = run("--tracking-uri", f"sqlite:///{path}", "list")
    assert_one_line_error(result, 1, f"no MLflow database at {path}")
    assert not path.parent.exists()


def test_the_default_store_is_mlflow_db_in_the_current_directory(run, monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert_one_line_error(run("list"), 1, f"no MLflow database at {tmp_path / 'mlflow.db'}")


def test_an_unsupported_store_uri_fails_in_one_line(run):
    assert_one_line_error(
        run("--tracking-uri", "ftp://example.invalid/store", "list"), 1, "unsupported URI 'ftp://example.invalid/store'"
    )


def test_bounded_retries_fill_in_defaults_but_keep_what_the_user_set(monkeypatch):
    for key in HTTP_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "99")
    bound_http_retries()
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "99"
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == HTTP_DEFAULTS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
