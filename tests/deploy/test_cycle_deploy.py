"""The cycle's CronJob, its pipeline image and the log volume it shares with serving, checked against the code."""

import re
from pathlib import Path

import click
import pytest

from tests.conftest import REPO
from tests.deploy.specs import DEPLOY, PIPELINE_DOCKERFILE, arguments, copies, image_cmd, k8s, workdir
from tests.deploy.test_deploy_files import expanded_only, mlflow_envvars, serving_container

CRON_FIELD = re.compile(r"(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*")


def cronjob() -> dict:
    (job,) = k8s("CronJob")
    return job


def cycle_container() -> dict:
    (container,) = cronjob()["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return container


def cycle_params(argv: list[str], logs_dir: str, here: Path) -> dict:
    """What ``python -m steps.cycle ARGV`` would run with, as its own click command reads it; the logs
    directory (the volume, which exists only in the pod) is read as ``here``, holding one replica's logs."""
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


def test_the_cronjob_command_is_a_valid_cycle_over_every_replicas_logs(tmp_path):
    (mount,) = cycle_container()["volumeMounts"]
    params = cycle_params(cycle_container()["args"], mount["mountPath"], tmp_path)
    assert mount["readOnly"] is True
    assert params["predictions"] == params["feedback"] == mount["mountPath"]
    assert float(params["cooldown_hours"]) > 0
    assert (REPO / params["data_path"]).is_file(), "the image's default base data"


def test_the_replicas_write_their_logs_beneath_the_directory_the_cycle_reads_on_the_same_volume():
    from iris_core.records import FEEDBACK_LOG_NAME, PREDICTION_LOG_NAME

    env = {e["name"]: e.get("value") for e in serving_container()["env"]}
    (serving_mount,) = serving_container()["volumeMounts"]
    (cycle_mount,) = cycle_container()["volumeMounts"]
    assert serving_mount["mountPath"] == cycle_mount["mountPath"]
    for variable, name in (
        ("SERVING_PREDICTION_LOG", PREDICTION_LOG_NAME),
        ("SERVING_FEEDBACK_LOG", FEEDBACK_LOG_NAME),
    ):
        assert env[variable] == f"{cycle_mount['mountPath']}/$(POD_NAME)/{name}"
    assert "POD_NAME" in expanded_only(serving_container()["env"])
    (deployment,) = k8s("Deployment")
    serving_claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"] for v in deployment["spec"]["template"]["spec"]["volumes"]
    }
    cycle_volumes = cronjob()["spec"]["jobTemplate"]["spec"]["template"]["spec"]["volumes"]
    cycle_claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in cycle_volumes}
    (claim,) = k8s("PersistentVolumeClaim")
    assert serving_claims[serving_mount["name"]] == cycle_claims[cycle_mount["name"]] == claim["metadata"]["name"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"], "replicas and the job mount it from several nodes"


def test_the_serving_options_the_deployment_sets_are_the_log_options():
    from serving.cli import serve

    options = {p.envvar: p.name for p in serve.params if isinstance(p, click.Option) and p.envvar}
    assert (options["SERVING_PREDICTION_LOG"], options["SERVING_FEEDBACK_LOG"]) == ("prediction_log", "feedback_log")


def test_the_cronjob_reads_its_registry_credentials_from_the_pipeline_secret_the_example_defines():
    (secret,) = [s for s in k8s("Secret") if s["metadata"]["name"] == "iris-pipeline"]
    env = {e["name"]: e for e in cycle_container()["env"]}
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
    for module in (REPO / "steps").glob("*.py"):
        imports |= set(re.findall(r"^\s*(?:from|import) (\w+)", module.read_text(), re.MULTILINE))
    project_packages = {p.name for p in REPO.iterdir() if (p / "__init__.py").exists()}
    assert imports & project_packages <= copied, (imports & project_packages) - copied
    assert "serving" not in copied and "data/iris.csv" in copied
    assert workdir(PIPELINE_DOCKERFILE) == "/app"
    ignore = (DEPLOY / "Dockerfile.pipeline.dockerignore").read_text().split()
    assert copied <= {line[1:].rstrip("/") for line in ignore if line.startswith("!")}


def test_the_pipeline_image_command_is_the_same_valid_cycle(tmp_path):
    (mount,) = cycle_container()["volumeMounts"]
    params = cycle_params(image_cmd(PIPELINE_DOCKERFILE), mount["mountPath"], tmp_path)
    assert params["predictions"] == params["feedback"] == mount["mountPath"]
    keywords = [i.split()[0] for i in arguments("USER", PIPELINE_DOCKERFILE)]
    assert keywords == ["app"]


@pytest.mark.parametrize("name", ["cycle-cronjob.yaml", "logs-volume.yaml"])
def test_the_new_manifests_are_in_the_kustomization(name):
    import yaml

    assert name in yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())["resources"]
