"""`python -m serving` refusing to start: one line on stderr and exit code 1."""

import resource
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.proxies import refused_start, running_proxy, serving_env, shared_upstream_proxy
from tests.helpers.support import descendants, free_port, stop_process, wait_until

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model-uri", "models:/iris/99"], "cannot resolve models:/iris/99"),
        (["--model-uri", "models:/iris@nobody"], "the alias is not set"),
    ],
)
def test_a_model_uri_the_registry_cannot_resolve_is_a_one_line_error(trained_registry, tmp_path, args, message):
    result = refused_start(trained_registry, tmp_path, *args)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_a_busy_port_is_a_one_line_error(trained_registry, proxy, tmp_path):
    port = proxy.url.rsplit(":", 1)[1]
    result = refused_start(trained_registry, tmp_path, "--upstream", "http://127.0.0.1:1", port=port)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}") and "Traceback" not in result.stderr


def test_the_port_is_taken_before_the_registry_is_asked_so_a_busy_port_fails_first(tmp_path):
    """Listening comes first: clients that connect while the model URI resolves wait instead of being refused."""
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        result = refused_start(
            tmp_path, tmp_path, port=port, env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
        )
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}"), result.stderr


def test_clients_that_connect_while_the_registry_is_still_asked_are_taken_not_refused(tmp_path):
    """The tracking server accepts and never answers: the model URI cannot resolve, yet the port takes connections."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "serving", "--port", str(port)],
            cwd=tmp_path,
            env={**serving_env(tmp_path), "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{silent.getsockname()[1]}"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            client = wait_until(
                lambda: socket.create_connection(("127.0.0.1", port), timeout=1), 60, what="the proxy's port"
            )
            client.close()
            silent.settimeout(30)
            asked, _ = silent.accept()  # the registry lookup, still waiting for an answer it will not get
            asked.close()
            assert proc.poll() is None, "still starting: it listened before the model URI resolved"
        finally:
            stop_process(proc)


def test_a_runs_uri_is_served_before_any_version_is_registered_and_labels_its_answers(tmp_path):
    import mlflow

    from steps.common.config import TrainConfig
    from steps.tables.loading import load_sklearn_iris
    from steps.train import log_pyfunc_model
    from steps.training.fitting import fit, split

    config = TrainConfig()
    train, _ = split(load_sklearn_iris(), config)
    with mlflow.start_run() as run:
        log_pyfunc_model(fit(train, config), train, model_name=None)
    assert mlflow.MlflowClient().search_registered_models() == []
    uri = f"runs:/{run.info.run_id}/model"
    with running_proxy(tmp_path, tmp_path / "serving", "--model-uri", uri) as proxy:
        answer = proxy.predict()
        health = proxy.health()
    assert answer.status_code == 200 and answer.json()["prediction"] == "setosa"
    assert answer.headers["X-Model-Version"] == f"run-{run.info.run_id}"
    label = f"run-{run.info.run_id}"
    assert health["model"] == {
        "name": label,
        "alias": None,
        "version": label,
        "run_id": run.info.run_id,
        "contract": {"name": "iris", "origin": "curated", "features": 4},
    }


def test_a_runs_uri_without_a_model_is_a_one_line_error(trained_registry, tmp_path):
    result = refused_start(trained_registry, tmp_path, "--model-uri", "runs:/0123456789abcdef/model")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: cannot resolve runs:/0123456789abcdef/model: no run with ID 0123456789abcdef"
    ), result.stderr


def test_more_connections_than_the_open_file_limit_allows_is_a_one_line_error(tmp_path):
    result = refused_start(
        tmp_path,  # refused before any registry is asked
        tmp_path,
        *("--upstream", "http://127.0.0.1:1", "--max-connections", "10000"),
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 4096)),
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: --max-connections 10000 needs about") and "(ulimit -n)" in result.stderr
    assert result.stderr.strip().count("\n") == 0


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--max-rows", "0"], {}, "error: Invalid value for '--max-rows' (env var: 'SERVING_MAX_ROWS'): 0 is not in"),
        ([], {"SERVING_LOG_SAMPLE_RATE": "2"}, "error: Invalid value for '--log-sample-rate' (env var: 'SERVING_LOG_"),
        ([], {"SERVING_CANARY": "50,10"}, "error: Invalid value for '--canary' (env var: 'SERVING_CANARY'): must rise"),
    ],
    ids=["command line", "environment", "composite"],
)
def test_a_value_outside_its_bounds_is_a_one_line_usage_error_before_anything_starts(tmp_path, args, env, message):
    result = refused_start(tmp_path, tmp_path, *args, env=env)
    assert result.returncode == 2 and result.stderr.startswith(message), result.stderr
    assert result.stderr.strip().count("\n") == 0 and "(see 'python -m serving --help')" in result.stderr


# -- the API token: from the environment or a file, never needed on a command line -----------------

FILE_TOKEN = "token-from-a-file-5f2c9e"
WEBHOOK_SECRET = "webhook-secret-8d41a7"


def test_the_token_read_from_a_file_guards_scoring_and_is_on_no_command_line_or_log(
    trained_registry, upstream_url, tmp_path
):
    token_file = tmp_path / "api-token"
    token_file.write_text(FILE_TOKEN + "\n")
    token_file.chmod(0o600)
    with shared_upstream_proxy(trained_registry, tmp_path, upstream_url, "--api-token-file", str(token_file)) as proxy:
        assert proxy.predict().status_code == 401
        assert proxy.predict(headers={"Authorization": f"Bearer {FILE_TOKEN}"}).status_code == 200
        assert FILE_TOKEN.encode() not in Path(f"/proc/{proxy.proc.pid}/cmdline").read_bytes()
    assert FILE_TOKEN not in proxy.output() and "visible to every local user" not in proxy.output()


@pytest.mark.parametrize(
    ("contents", "env", "message"),
    [
        ("\n", {}, "error: --api-token-file {path} must hold the token alone, on one line"),
        ("one\ntwo\n", {}, "error: --api-token-file {path} must hold the token alone, on one line"),
        (
            "t0ken\n",
            {"SERVING_API_TOKEN": "another"},
            "error: give the token once: --api-token-file or SERVING_API_TOKEN (--api-token), not both",
        ),
    ],
    ids=["empty", "two lines", "given twice"],
)
def test_a_token_file_that_holds_no_single_token_or_comes_beside_one_is_a_one_line_usage_error(
    tmp_path, contents, env, message
):
    path = tmp_path / "api-token"
    path.write_text(contents)
    result = refused_start(
        tmp_path, tmp_path, "--upstream", "http://127.0.0.1:1", "--api-token-file", str(path), env=env
    )
    assert result.returncode == 2 and result.stderr.strip() == message.format(path=path)
    assert "another" not in result.stderr and "t0ken" not in result.stderr


def test_a_token_given_on_the_command_line_works_and_is_warned_about_once_without_being_shown(
    trained_registry, upstream_url, tmp_path
):
    with shared_upstream_proxy(trained_registry, tmp_path, upstream_url, "--api-token", FILE_TOKEN) as proxy:
        assert proxy.predict(headers={"Authorization": f"Bearer {FILE_TOKEN}"}).status_code == 200
    warnings = [line for line in proxy.output().splitlines() if "visible to every local user" in line]
    assert len(warnings) == 1 and "SERVING_API_TOKEN" in warnings[0] and FILE_TOKEN not in proxy.output()


def test_the_model_servers_environment_never_holds_the_api_token_or_the_webhook_secret(
    trained_registry, tmp_path, monkeypatch
):
    monkeypatch.setenv("SERVING_API_TOKEN", FILE_TOKEN)
    monkeypatch.setenv("SERVING_WEBHOOK_SECRET", WEBHOOK_SECRET)
    with running_proxy(trained_registry, tmp_path, "--model-uri", "models:/iris/2") as proxy:
        assert proxy.predict(headers={"Authorization": f"Bearer {FILE_TOKEN}"}).status_code == 200
        model_server = proxy.health()["upstream"]["pid"]
        tree = [model_server, *descendants(model_server)]
        environments = {pid: Path(f"/proc/{pid}/environ").read_bytes() for pid in tree}
    assert len(environments) >= 2, "mlflow models serve and its uvicorn"
    for pid, environment in environments.items():
        assert b"SERVING_API_TOKEN" not in environment and FILE_TOKEN.encode() not in environment, pid
        assert b"SERVING_WEBHOOK_SECRET" not in environment and WEBHOOK_SECRET.encode() not in environment, pid


def test_every_option_reads_an_environment_variable_that_sets_it(monkeypatch):
    import click

    from serving.cli import serve

    options = [p for p in serve.params if isinstance(p, click.Option) and p.name != "help"]
    assert all(p.envvar and p.show_envvar for p in options), [p.name for p in options if not p.envvar]
    assert len({p.envvar for p in options}) == len(options)
    monkeypatch.setenv("SERVING_MAX_ROWS", "5")
    monkeypatch.setenv("SERVING_BATCHING", "false")
    params = serve.make_context("serve", []).params
    assert params["max_rows"] == 5 and params["batching"] is False
