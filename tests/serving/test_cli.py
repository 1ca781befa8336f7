"""`python -m serving` refusing to start: one line on stderr and exit code 1."""

import subprocess
import sys

import pytest

from tests.serving.conftest import serving_env
from tests.support import free_port

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model-uri", "models:/iris/99"], "cannot resolve models:/iris/99"),
        (["--model-uri", "models:/iris@nobody"], "the alias is not set"),
    ],
)
def test_a_model_uri_the_registry_cannot_resolve_is_a_one_line_error(trained_registry, tmp_path, args, message):
    result = subprocess.run(
        [sys.executable, "-m", "serving", "--port", str(free_port()), *args],
        cwd=tmp_path,
        env=serving_env(trained_registry),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_a_busy_port_is_a_one_line_error(trained_registry, proxy, tmp_path):
    port = proxy.url.rsplit(":", 1)[1]
    result = subprocess.run(
        [sys.executable, "-m", "serving", "--upstream", "http://127.0.0.1:1", "--port", port],
        cwd=tmp_path,
        env=serving_env(trained_registry),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}") and "Traceback" not in result.stderr
