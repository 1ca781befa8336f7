"""Client-side settings every tool of the project applies before it talks to a tracking store."""

import os

# MLflow's defaults retry an unreachable server for minutes; a person at a terminal or a
# scheduler wants a clear failure within seconds. Explicit user settings still win.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}


def bound_http_retries() -> None:
    """Bound MLflow's HTTP retries unless the user chose otherwise; call from entry points only."""
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)


def one_line(exc: BaseException) -> str:
    """The first meaningful line of an MLflow or network error, without its traceback or payload."""
    text = str(getattr(exc, "message", None) or exc).strip() or type(exc).__name__
    first = text.splitlines()[0]
    if "Max retries exceeded" in text or "Connection refused" in text or "Failed to establish" in text:
        return "tracking server unreachable: " + _host_of(text)
    if "401" in first or "Unauthorized" in text or "credentials" in text.lower() and "invalid" in text.lower():
        return "tracking server refused the credentials (401): check MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD"
    if "403" in first or "PERMISSION_DENIED" in text:
        return "permission denied by the tracking server (403): " + first[:200]
    return first[:300]


def _host_of(text: str) -> str:
    import re

    match = re.search(r"host='([^']+)', port=(\d+)", text)
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    return f"{match.group(1)}:{match.group(2)}" if match else uri or "(unknown)"
