"""``registry_tools webhook``'s checks made before any registry call; the calls themselves are in
``tests/integration/serving/test_webhook_delivery.py``, against a real ``mlflow server`` and proxy."""

import pytest

from registry_tools.webhooks import default_name
from tests.helpers.registry_checks import assert_one_line_error

URL = "http://proxy.internal:8000/webhooks/mlflow"
NOWHERE = "http://127.0.0.1:1"  # a server that is not there: these commands must not need it


@pytest.fixture
def at_a_server(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", NOWHERE)
    monkeypatch.setenv("SERVING_WEBHOOK_SECRET", "a-secret")


def test_a_dry_run_names_the_webhook_its_events_and_where_the_secret_comes_from_and_calls_nothing(run, at_a_server):
    result = run("webhook", "create", "--url", URL, "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "dry run: would create webhook serving-proxy.internal-8000: model_version_alias.created, "
        f"model_version_alias.deleted -> {URL}, signed with $SERVING_WEBHOOK_SECRET; nothing changed\n"
    )


def test_a_webhook_without_a_secret_is_a_usage_error_naming_the_variable(run, at_a_server, monkeypatch):
    monkeypatch.delenv("SERVING_WEBHOOK_SECRET")
    assert_one_line_error(run("webhook", "create", "--url", URL), 2, "set SERVING_WEBHOOK_SECRET")
    monkeypatch.setenv("OTHER_SECRET", " ")
    result = run("webhook", "create", "--url", URL, "--secret-env", "OTHER_SECRET")
    assert_one_line_error(result, 2, "set OTHER_SECRET to the proxy's webhook secret (its SERVING_WEBHOOK_SECRET)")


@pytest.mark.parametrize("url", ["proxy:8000/webhooks/mlflow", "ftp://proxy/webhooks/mlflow", "http:///webhooks"])
def test_a_url_that_is_not_http_is_refused_in_one_line(run, at_a_server, url):
    assert_one_line_error(run("webhook", "create", "--url", url), 1, "--url must be the proxy's http(s) URL")


@pytest.mark.parametrize("command", [["create", "--url", URL], ["list"], ["delete", "some-id", "--yes"], ["test", "x"]])
def test_a_store_other_than_a_tracking_server_is_refused_before_any_call(run, monkeypatch, tmp_path, command):
    monkeypatch.setenv("SERVING_WEBHOOK_SECRET", "a-secret")
    result = run("webhook", *command, "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert_one_line_error(result, 1, "webhooks are kept and sent by a tracking server")
    assert not (tmp_path / "mlflow.db").exists()


def test_the_default_name_is_the_proxys_host_and_port_within_mlflows_rules():
    from mlflow.utils.validation import _validate_webhook_name

    assert default_name("https://proxy.example.com/webhooks/mlflow") == "serving-proxy.example.com-443"
    assert default_name("http://[::1]:8000/webhooks/mlflow") == "serving-1-8000"
    for url in ("http://[::1]:8000/", "http://" + "a." * 60 + "example.com/", "http://10.0.0.5:8000/x", URL):
        _validate_webhook_name(default_name(url))  # MLflow's own check of a webhook's name
