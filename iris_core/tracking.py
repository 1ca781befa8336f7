"""Talking to a tracking store: bounded retries, a fast check that it is there, and its errors in one line.

MLflow's client is imported lazily, and ``requests`` (MLflow's own HTTP client) only by the
check of an http(s) store, so importing this module costs nothing.
"""

import os
import re
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

from iris_core.errors import RegistryUnavailable
from iris_core.redaction import redact
from iris_core.registry_client import RegistryApiError

# MLflow's defaults retry an unreachable server for minutes; a person at a terminal or a
# scheduler wants a clear failure within seconds. Explicit user settings still win.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}

# One request without retries decides whether a server answers at all: (connect, read).
PREFLIGHT_TIMEOUT = (3.0, 5.0)


def bound_http_retries() -> None:
    """Bound MLflow's HTTP retries unless the user chose otherwise; call from entry points only."""
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)


def one_line(exc: BaseException) -> str:
    """The first meaningful line of an MLflow or network error, without its traceback, payload or credentials."""
    return redact(_first_line(exc))


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc).strip() or type(exc).__name__
    first = text.splitlines()[0]
    if "Max retries exceeded" in text or "Connection refused" in text or "Failed to establish" in text:
        return "tracking server unreachable: " + _host_of(text)
    if "401" in first or "Unauthorized" in text or "credentials" in text.lower() and "invalid" in text.lower():
        return (
            "tracking server refused the credentials (401): check MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD"
        )
    if match := re.search(r"endpoint (\S+) failed with error code 404", first):
        return f"the tracking server answered 404 for {match.group(1)}: is the tracking URI an MLflow server?"
    if "403" in first or "PERMISSION_DENIED" in text:
        return "permission denied by the tracking server (403): " + first[:200]
    return shorten(first)


def is_store_failure(exc: BaseException) -> bool:
    """An MLflow error, a registry's error answer or a failure to reach a store, as opposed to a bug in the project."""
    if isinstance(exc, (OSError, RegistryApiError)):
        return True
    mlflow_exceptions = sys.modules.get("mlflow.exceptions")
    if mlflow_exceptions is not None and isinstance(exc, mlflow_exceptions.MlflowException):
        return True
    requests_exceptions = sys.modules.get("requests.exceptions")
    return requests_exceptions is not None and isinstance(exc, requests_exceptions.RequestException)


def shorten(text: str, limit: int = 300) -> str:
    """Cut a long message at the end of a sentence when there is one early enough."""
    if len(text) <= limit:
        return text
    cut = text.rfind(". ", 0, limit)
    return text[: cut + 1] if cut >= 40 else text[: limit - 3] + "..."


def _host_of(text: str) -> str:
    match = re.search(r"host='([^']+)', port=(\d+)", text)
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    return f"{match.group(1)}:{match.group(2)}" if match else uri or "(unknown)"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, None for other URIs or an in-memory database."""
    if not uri.startswith("sqlite:///"):
        return None
    path = unquote(uri[len("sqlite:///") :].split("?", 1)[0])
    return Path(path) if path and path != ":memory:" else None


def check_store(uri: str) -> None:
    """Fail fast, in one line, when the store behind the URI cannot be what the user meant.

    An http(s) server gets one request without retries, so a closed port or a server that
    accepts connections but never answers fails in seconds. Any HTTP answer counts, even
    401, and so does a TLS handshake this check cannot complete: MLflow's own TLS settings
    decide that. A sqlite file must already exist: MLflow would otherwise create an empty
    database at a mistyped path and report every model as missing.
    """
    scheme = urlparse(uri).scheme
    shown = redact(uri)
    if scheme in ("http", "https"):
        import requests

        connect, read = PREFLIGHT_TIMEOUT
        try:
            requests.head(uri, timeout=PREFLIGHT_TIMEOUT, allow_redirects=False).close()
        except requests.exceptions.SSLError:
            return
        except requests.exceptions.ConnectTimeout:
            raise RegistryUnavailable(
                f"tracking server {shown} unreachable: no connection within {connect:g} s"
            ) from None
        except requests.exceptions.Timeout:
            raise RegistryUnavailable(f"tracking server {shown} did not answer within {read:g} s") from None
        except requests.exceptions.RequestException as exc:
            raise RegistryUnavailable(f"tracking server {shown} unreachable: {_connection_problem(exc)}") from None
    elif (path := sqlite_path(uri)) is not None and not path.is_file():
        raise RegistryUnavailable(
            f"no MLflow database at {path.resolve()}: check --tracking-uri or MLFLOW_TRACKING_URI"
        )


def _connection_problem(exc: Exception) -> str:
    text = str(exc).lower()
    if "refused" in text:
        return "connection refused"
    if "name or service not known" in text or "nodename nor servname" in text or "name resolution" in text:
        return "unknown host"
    return type(exc).__name__
