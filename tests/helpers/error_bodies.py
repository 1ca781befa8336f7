"""What every error the proxy answers looks like: a short JSON body with three keys, nothing from inside the process."""

import requests

ERROR_KEYS = {"error_code", "message", "details"}
LEAKS = ("Traceback", "stack_trace", "site-packages", 'File "', ".py")


def assert_error(response: requests.Response, status: int, error_code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == ERROR_KEYS and body["error_code"] == error_code
    assert not any(leak in response.text for leak in LEAKS)
    return body
