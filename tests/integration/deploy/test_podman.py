"""The serving and pipeline images, built with podman from Debian's packages and run against a real tracking server.

The images are built once for the module by ``deploy/podman/build_and_run.sh build``, as a
reader builds them (the Debian base image is made on the first run and kept, and the pip
install layer the two Dockerfiles share is built once), in the background while a real
``mlflow server`` starts on the host's loopback and the real pipeline registers a version
there. The serving container runs
as uid 10001 on the host's network, listening on 127.0.0.1, started by the same script.
Its tests run in this file's order, the one that stops it last; then the pipeline image
runs one cycle over the logs the serving container wrote, and ``podman kube play`` runs
the Kubernetes Deployment with its probes, capturing into the tracking server's artifact store.
"""

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from bench.traffic import ROWS
from iris_core.contract import CYCLE_EXPERIMENT, CycleDecision, Tag
from tests.helpers.deploy import podman as pm
from tests.helpers.deploy.specs import healthcheck_cmd
from tests.helpers.deploy.tools import require
from tests.helpers.support import free_port, mlflow_server, stop_process, wait_until
from tests.helpers.tracking import REPO, clean_env

pytestmark = pytest.mark.slow

TOKEN = secrets.token_urlsafe(16)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
START_TIMEOUT = 240


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """The script's build of both images from the Debian base, started first and left running in the background
    while the tracking server starts and the pipeline trains; yields the process and its output."""
    require("podman", "runc", "mmdebstrap")
    log = tmp_path_factory.mktemp("images") / "build.log"
    proc = pm.start_script("build", log)
    try:
        yield proc, log
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def images(build):
    """The built images' build output, once the build has ended well."""
    proc, log = build
    assert proc.wait(timeout=pm.BUILD_TIMEOUT) == 0, log.read_text(errors="replace")[-4000:]
    return log


@pytest.fixture(scope="module")
def tracking(build, tmp_path_factory):
    """A real ``mlflow server`` on loopback, holding iris version 1 (@champion) registered by the real pipeline."""
    directory = tmp_path_factory.mktemp("tracking")
    with mlflow_server(f"sqlite:///{directory / 'mlflow.db'}", directory / "artifacts") as uri:
        trained = subprocess.run(
            [sys.executable, "-m", "steps.main", "--data-path", str(REPO / "data" / "iris.csv")],
            cwd=directory,
            env=clean_env({"MLFLOW_TRACKING_URI": uri}),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert trained.returncode == 0 and "@champion -> version 1" in trained.stdout, trained.stdout + trained.stderr
        yield uri


@dataclass
class Serving:
    name: str
    url: str
    logs: Path  # the host directory mounted as the logs volume
    log: Path  # the script's output

    def predict(self, row=ROWS["setosa"], token: str | None = TOKEN, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.post(f"{self.url}/predict", json=row, headers=headers, timeout=30, **kwargs)


@pytest.fixture(scope="module")
def serving(images, tracking, tmp_path_factory):
    """The serving image, started by the script against the tracking server; removed at the end."""
    directory = tmp_path_factory.mktemp("serving")
    name, port = f"iris-serving-test-{uuid.uuid4().hex[:8]}", free_port()
    env = {
        "NAME": name,
        "PORT": str(port),
        "LOGS_DIR": str(directory / "logs"),
        "MLFLOW_TRACKING_URI": tracking,
        "SERVING_API_TOKEN": TOKEN,
        "START_TIMEOUT": str(START_TIMEOUT),
    }
    log = directory / "serve.log"
    try:
        started = pm.script("serve", log, START_TIMEOUT + 60, **env)
        assert started.returncode == 0, started.stdout
        yield Serving(name, f"http://127.0.0.1:{port}", directory / "logs", log)
    finally:
        pm.podman("rm", "--force", "--time", "5", name, check=False)


def test_both_images_build_on_the_debian_base_sharing_the_pip_layer_and_without_the_ca_bundle(images):
    output = images.read_text()
    assert "--build-arg BASE_IMAGE=localhost/bookworm-py:latest" in output
    assert output.count("RUN python3 -m venv /opt/venv && pip install -r requirements.txt") == 2
    pipeline_build = output[output.index("-f deploy/Dockerfile.pipeline") :]
    pip_step = pipeline_build[pipeline_build.index("pip install -r requirements.txt") :]
    assert pip_step.splitlines()[1].startswith("--> Using cache"), "the pipeline build ran pip install again"
    bundles = {image: pm.run_in(image, "sha256sum", pm.CA_BUNDLE) for image in (pm.LOCAL_BASE, *pm.IMAGES)}
    assert len(set(bundles.values())) == 1, f"an image's CA bundle is not its base's: {bundles}"


def test_the_serving_container_runs_as_uid_10001_and_serves_the_champion_on_loopback(serving):
    assert pm.inspect(serving.name, "{{.Config.User}}") == "10001"
    assert pm.podman("exec", serving.name, "id", "-u") == "10001"
    ready = requests.get(f"{serving.url}/ready", timeout=30)
    assert ready.status_code == 200 and ready.json() == {"status": "ready", "version": "1"}
    listening = pm.podman("exec", serving.name, "python", "-c", LISTENING)
    assert listening.split() == ["127.0.0.1"], listening


# The addresses the proxy listens on, read from /proc/net/tcp inside the container (no ss or netstat there).
LISTENING = """
import os, socket, struct
port = int(os.environ["SERVING_PORT"])
for line in open("/proc/net/tcp").read().splitlines()[1:]:
    local, state = line.split()[1], line.split()[3]
    address, bound = local.split(":")
    if state == "0A" and int(bound, 16) == port:
        print(socket.inet_ntoa(struct.pack("<I", int(address, 16))))
"""


def test_predict_answers_with_the_token_and_is_refused_without_it(serving):
    answered = serving.predict()
    assert answered.status_code == 200 and answered.json()["prediction"] == "setosa"
    assert answered.headers["X-Model-Version"] == "1"
    assert serving.predict(token=None).status_code == 401
    assert serving.predict(token="not-the-token").status_code == 401


def test_the_dockerfiles_healthcheck_reports_the_container_healthy(serving):
    configured = json.loads(pm.inspect(serving.name, "{{json .Config.Healthcheck}}"))
    assert configured["Test"] == ["CMD", *healthcheck_cmd()]
    checked = subprocess.run(
        [*pm.PODMAN, "healthcheck", "run", serving.name], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert pm.inspect(serving.name, "{{.State.Health.Status}}") == "healthy"


@dataclass
class Answer:
    started: float
    ended: float
    status: int | None  # None: no HTTP answer
    complete: bool  # a whole JSON answer with a prediction
    refused: bool  # no connection: the listener was closed before anything was sent


class Load:
    """Client threads posting /predict with the token, each until its first refused connection; bounded in count and time."""

    def __init__(self, url: str, threads: int = 4, max_requests: int = 400, max_seconds: float = 120):
        self.url, self.max_requests, self.deadline = url, max_requests, time.monotonic() + max_seconds
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.deadline = 0
        for thread in self._threads:
            thread.join(timeout=90)

    def _run(self) -> None:
        with requests.Session() as session:
            for _ in range(self.max_requests):
                if time.monotonic() > self.deadline:
                    return
                started = time.monotonic()
                try:
                    response = session.post(f"{self.url}/predict", json=ROWS["virginica"], headers=AUTH, timeout=60)
                    status, complete, refused = response.status_code, _complete(response), False
                except requests.ConnectionError as exc:
                    status, complete, refused = None, False, "Connection refused" in str(exc)
                with self._lock:
                    self.answers.append(Answer(started, time.monotonic(), status, complete, refused))
                if refused:
                    return


def _complete(response: requests.Response) -> bool:
    with contextlib.suppress(ValueError):
        return response.json().get("prediction") == "virginica"
    return False


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


def in_flight(url: str) -> float:
    """``proxy_requests_in_flight`` from the proxy's /metrics (which never waits on the model server)."""
    lines = requests.get(f"{url}/metrics", timeout=10).text.splitlines()
    return float(next(line for line in lines if line.startswith("proxy_requests_in_flight ")).split()[1])


def test_podman_stop_under_load_exits_0_and_answers_every_request_sent_before_it(serving):
    """The model server is paused (SIGSTOP, from the host) so that requests are in flight when the stop comes;
    it resumes once the proxy has stopped accepting connections, long before the proxy's liveness check
    would count it hung (three missed pings)."""
    port = int(serving.url.rsplit(":", 1)[1])
    model_server = pm.model_server_group(serving.name)
    stopped: dict = {}
    with Load(serving.url) as load:
        wait_until(lambda: len(load.answers) >= 40, 60, what="40 answers under load")
        os.killpg(model_server, signal.SIGSTOP)
        try:
            wait_until(lambda: in_flight(serving.url) >= 1, 5, interval=0.05, what="a request in flight")
            stop_at = time.monotonic()
            stopper = threading.Thread(
                target=lambda: stopped.update(done=pm.script("stop", serving.log, 120, NAME=serving.name)), daemon=True
            )
            stopper.start()
            wait_until(lambda: not accepts(port), 4, interval=0.05, what="the proxy to stop accepting connections")
            refusing_at = time.monotonic()
        finally:
            os.killpg(model_server, signal.SIGCONT)
        stopper.join(timeout=120)
    assert stopped["done"].returncode == 0 and f"{serving.name} exited with code 0" in stopped["done"].stdout
    before = [a for a in load.answers if a.started < stop_at]
    lost = [a for a in before if a.status != 200 or not a.complete]
    assert before and not lost, f"{len(lost)} of the {len(before)} requests sent before the stop got no whole answer"
    assert any(a.ended > refusing_at for a in before), "no request was in flight when the proxy stopped accepting"
    after = [a for a in load.answers if a.started >= stop_at]
    assert all(a.complete or a.status is None for a in after), "a request after the stop got an error answer"
    assert any(a.refused for a in after), "the load never saw the listener closed"


def test_the_pipeline_image_runs_one_cycle_over_the_serving_containers_logs(serving, tracking):
    from mlflow import MlflowClient

    assert list(serving.logs.glob("*/predictions.jsonl")), "the serving container wrote no prediction log"
    log = serving.log.parent / "cycle.log"
    ran = pm.script("cycle", log, 600, MLFLOW_TRACKING_URI=tracking, LOGS_DIR=str(serving.logs))
    assert ran.returncode == 0, ran.stdout
    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    runs = client.search_runs([client.get_experiment_by_name(CYCLE_EXPERIMENT).experiment_id])
    (run,) = [r for r in runs if Tag.CYCLE_DECISION in r.data.tags]
    assert run.data.tags[Tag.CYCLE_DECISION] in set(CycleDecision), run.data.tags
    assert f"cycle: {run.data.tags[Tag.CYCLE_DECISION]}" in ran.stdout
    assert client.get_model_version("iris", "1").tags.get(Tag.DRIFT_STATUS), "the monitor did not tag version 1"


# -- podman kube play ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kube(images, tracking, tmp_path_factory):
    """deploy/k8s's Deployment played by podman (see ``deployment_for_podman`` for what changes), on slirp4netns."""
    directory = tmp_path_factory.mktemp("kube")
    suffix, port = uuid.uuid4().hex[:8], free_port()
    documents, names = pm.deployment_for_podman(suffix, pm.SERVING_IMAGE, port)
    manifest = directory / "deployment.yaml"
    manifest.write_text(yaml.safe_dump_all(documents))
    tracking_port = tracking.rsplit(":", 1)[1]
    values = {"MLFLOW_TRACKING_URI": f"http://{pm.HOST_LOOPBACK_FROM_POD}:{tracking_port}", "SERVING_API_TOKEN": TOKEN}
    secret = pm.kube_secret(directory, values)
    conf = {"CONTAINERS_CONF": str(pm.containers_conf(directory))}
    pm.podman("secret", "create", names["secret"], str(secret))
    secret.unlink()
    try:
        pm.podman(
            "kube", "play", "--network", "slirp4netns:allow_host_loopback=true", str(manifest), env=conf, timeout=300
        )
        url = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: requests.get(f"{url}/ready", timeout=5).status_code == 200, START_TIMEOUT, what="the pod's /ready"
        )
        yield url, names, documents[1], documents[0]["data"]["SERVING_CAPTURE_URI"]
    finally:
        pm.podman("kube", "down", str(manifest), env=conf, check=False, timeout=120)
        pm.podman("secret", "rm", names["secret"], check=False)


def test_kube_play_runs_the_deployment_whose_probes_pass_as_kubelet_would_run_them(kube):
    url, names, deployment, _ = kube
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["hostPort"] for p in container["ports"]}
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = container[kind]["httpGet"]
        answer = requests.get(
            f"http://127.0.0.1:{ports[probe['port']]}{probe['path']}", timeout=container[kind]["timeoutSeconds"]
        )
        assert 200 <= answer.status_code < 400, (kind, answer.status_code)


def champion(tracking: str) -> str:
    from mlflow import MlflowClient

    return (
        MlflowClient(tracking_uri=tracking, registry_uri=tracking)
        .get_model_version_by_alias("iris", "champion")
        .version
    )


def test_kube_play_applies_the_deployments_security_context_resources_and_secret(kube, tracking):
    url, names, deployment, capture = kube
    name = names["container"]
    security = deployment["spec"]["template"]["spec"]["securityContext"]
    assert pm.inspect(name, "{{.Config.User}}") == f"{security['runAsUser']}:{security['runAsGroup']}"
    assert pm.podman("exec", name, "sh", "-c", "grep CapBnd /proc/1/status").split()[1] == "0" * 16
    assert "no-new-privileges" in pm.inspect(name, "{{json .HostConfig.SecurityOpt}}")
    assert int(pm.inspect(name, "{{.HostConfig.Memory}}")) == 2560 * 2**20
    assert int(pm.inspect(name, "{{.HostConfig.NanoCpus}}")) == 2 * 10**9
    env = dict(v.split("=", 1) for v in json.loads(pm.inspect(name, "{{json .Config.Env}}")))
    assert env["SERVING_MODEL_URI"] == "models:/iris@champion"
    scored = requests.post(f"{url}/predict", json=ROWS["setosa"], headers=AUTH, timeout=30)
    assert scored.status_code == 200 and scored.headers["X-Model-Version"] == champion(tracking)
    health = requests.get(f"{url}/health", headers=AUTH, timeout=30).json()["capture"]  # its details need the token
    assert (health["location"], health["replica"], health["state"]) == (capture, names["pod"], "ok")
    assert requests.post(f"{url}/predict", json=ROWS["setosa"], timeout=30).status_code == 401


def test_stopping_the_pod_ends_the_proxy_with_exit_code_0(kube):
    url, names, _, _ = kube
    pm.podman("pod", "stop", names["pod"], timeout=120)
    assert pm.inspect(names["container"], "{{.State.ExitCode}}") == "0"
