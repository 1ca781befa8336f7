"""The cycle's CronJob, its pipeline image and the capture it shares with serving, checked against the code."""

import re
from pathlib import Path

import click
import pytest

from tests.helpers.deploy.specs import (
    DEPLOY,
    PIPELINE_DOCKERFILE,
    arguments,
    copies,
    image_cmd,
    k8s,
    mlflow_envvars,
    serving_container,
    workdir,
)
from tests.helpers.tracking import REPO

CRON_FIELD = re.compile(r"(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*")


def cronjob() -> dict:
    (job,) = k8s("CronJob")
    return job


def cycle_container() -> dict:
    (container,) = cronjob()["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return container


def capture_uri() -> str:
    """The location capture.yaml's ConfigMap gives the replicas and the job."""
    (config,) = [c for c in k8s("ConfigMap") if c["metadata"]["name"] == "iris-capture"]
    return config["data"]["SERVING_CAPTURE_URI"]


def from_capture_config(env: list[dict], variable: str) -> bool:
    """Whether ``variable`` of a container's env is read from the capture ConfigMap's key of the same name."""
    (entry,) = [e for e in env if e["name"] == variable]
    reference = entry.get("valueFrom", {}).get("configMapKeyRef", {})
    return reference == {"name": "iris-capture", "key": variable}


def expand(argv: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' ``$(VAR)`` references in a container's args, replaced from its env."""
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], arg) for arg in argv]


def cycle_params(argv: list[str], logs_dir: str, here: Path) -> dict:
    """What ``python -m steps.cycle ARGV`` would run with, as its own click command reads it; the logs
    directory (a mount, which exists only in the container) is read as ``here``, holding one replica's logs."""
    from steps.cycle import main

    assert argv[:3] == ["python", "-m", "steps.cycle"], argv
    (here / "pod-0").mkdir(parents=True, exist_ok=True)
    (here / "pod-0" / "predictions.jsonl").touch()
    local = [str(here) if arg == str(logs_dir) else arg for arg in argv[3:]]
    params = main.make_context("cycle", local).params
    return {key: str(logs_dir) if value == str(here) else value for key, value in params.items()}


def test_the_cronjob_runs_the_cycle_hourly_never_two_at_once_and_never_retries_a_failed_gate():
    spec = cronjob()["spec"]
    fields = spec["schedule"].split()
    assert len(fields) == 5 and all(CRON_FIELD.fullmatch(f) for f in fields), spec["schedule"]
    assert spec["concurrencyPolicy"] == "Forbid"
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0 and job["template"]["spec"]["restartPolicy"] == "Never"


def test_the_cronjob_command_is_a_valid_cycle_over_a_window_of_every_replicas_capture():
    from iris_core.capture import is_capture
    from steps.cycle import main
    from steps.monitoring.window import window_of

    container = cycle_container()
    assert "volumeMounts" not in container and "volumes" not in cronjob()["spec"]["jobTemplate"]["spec"]["template"]
    assert from_capture_config(container["env"], "SERVING_CAPTURE_URI")
    argv = expand(container["args"], {"SERVING_CAPTURE_URI": capture_uri()})
    assert argv[:3] == ["python", "-m", "steps.cycle"], argv
    params = main.make_context("cycle", argv[3:]).params
    assert params["predictions"] == params["feedback"] == capture_uri() and is_capture(capture_uri())
    window = window_of(params["since"], params["until"], params["hours"], now=lambda: 10**9)
    assert window.until is None and 10**9 - window.since >= 3600, "at least the hour since the last run"
    assert float(params["cooldown_hours"]) > 0
    assert (REPO / params["data_path"]).is_file(), "the image's default base data"


def test_the_replicas_capture_into_the_tracking_servers_artifact_store_the_cycle_reads_each_under_its_pod_name():
    env = {e["name"]: e for e in serving_container()["env"]}
    assert from_capture_config(serving_container()["env"], "SERVING_CAPTURE_URI")
    assert capture_uri().startswith("mlflow-artifacts:/"), "the tracking server's proxied artifact store"
    assert env["SERVING_CAPTURE_REPLICA"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert not {"SERVING_PREDICTION_LOG", "SERVING_FEEDBACK_LOG"} & set(env), "the capture keeps the labels itself"
    assert not k8s("PersistentVolumeClaim"), "no volume shared between pods"
    (deployment,) = k8s("Deployment")
    (volume,) = deployment["spec"]["template"]["spec"]["volumes"]
    (mount,) = serving_container()["volumeMounts"]
    assert volume["name"] == mount["name"] and "emptyDir" in volume, "the spool is the pod's own"
    assert env["SERVING_CAPTURE_SPOOL"]["value"] == mount["mountPath"]


def test_the_capture_variables_the_deployment_sets_are_the_capture_options(monkeypatch):
    from serving.cli import serve
    from serving.config import ServingConfig

    options = {p.envvar: p.name for p in serve.params if isinstance(p, click.Option) and p.envvar}
    names = ("SERVING_CAPTURE_URI", "SERVING_CAPTURE_REPLICA", "SERVING_CAPTURE_SPOOL")
    assert [options[n] for n in names] == ["capture_uri", "capture_replica", "capture_spool"]
    config = ServingConfig(capture_uri=capture_uri(), capture_replica="iris-serving-7c9f8d6b5-x2k4q")
    assert config.capture_replica == "iris-serving-7c9f8d6b5-x2k4q", "a pod name is a valid replica id"


def test_the_cronjob_reads_its_registry_credentials_from_the_pipeline_secret_the_example_defines():
    (secret,) = [s for s in k8s("Secret") if s["metadata"]["name"] == "iris-pipeline"]
    env = {e["name"]: e for e in cycle_container()["env"] if e["name"] != "SERVING_CAPTURE_URI"}  # for its args
    assert set(env) <= mlflow_envvars() | {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}
    for variable in env.values():
        reference = variable["valueFrom"]["secretKeyRef"]
        assert reference["name"] == "iris-pipeline" and reference["key"] in secret["stringData"]
    assert not env["MLFLOW_TRACKING_URI"]["valueFrom"]["secretKeyRef"].get("optional", False)


def test_the_cronjob_runs_as_the_pipeline_images_user_without_privileges():
    security = cronjob()["spec"]["jobTemplate"]["spec"]["template"]["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True
    (run,) = [r for r in arguments("RUN", PIPELINE_DOCKERFILE) if "useradd" in r]
    assert f"--uid {security['runAsUser']}" in run
    assert cycle_container()["securityContext"]["allowPrivilegeEscalation"] is False
    assert set(cycle_container()["resources"]) == {"requests", "limits"}


def test_the_pipeline_image_copies_every_package_the_steps_import_and_the_base_data():
    copied = {source.rstrip("/") for source, _ in copies(PIPELINE_DOCKERFILE)}
    for source in copied:
        for part in source.split():
            assert (REPO / part).exists(), part
    imports = set()
    for module in (REPO / "steps").rglob("*.py"):
        imports |= set(re.findall(r"^\s*(?:from|import) (\w+)", module.read_text(), re.MULTILINE))
    project_packages = {p.name for p in REPO.iterdir() if (p / "__init__.py").exists()}
    assert imports & project_packages <= copied, (imports & project_packages) - copied
    assert "serving" not in copied and "data/iris.csv" in copied
    assert workdir(PIPELINE_DOCKERFILE) == "/app"
    ignore = (DEPLOY / "Dockerfile.pipeline.dockerignore").read_text().split()
    assert copied <= {line[1:].rstrip("/") for line in ignore if line.startswith("!")}


def test_the_pipeline_image_command_is_a_valid_cycle_over_the_logs_the_podman_script_mounts(tmp_path):
    (mount,) = re.findall(r"^LOGS_MOUNT=(\S+)", (DEPLOY / "podman" / "build_and_run.sh").read_text(), re.MULTILINE)
    params = cycle_params(image_cmd(PIPELINE_DOCKERFILE), mount, tmp_path)
    assert params["predictions"] == params["feedback"] == mount
    keywords = [i.split()[0] for i in arguments("USER", PIPELINE_DOCKERFILE)]
    assert keywords == ["app"]


@pytest.mark.parametrize("name", ["cycle-cronjob.yaml", "capture.yaml"])
def test_the_new_manifests_are_in_the_kustomization(name):
    import yaml

    assert name in yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())["resources"]
