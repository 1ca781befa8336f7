"""deploy/ parsed and checked against the code: every path, port, module and variable it names.

No Docker engine or Kubernetes cluster runs here, so these checks are what stands between
a typo in a manifest and a pod that never becomes ready.
"""

import re

import click
import pytest

from tests.helpers.deploy.specs import (
    DEPLOY,
    DOCKERFILE,
    PIPELINE_DOCKERFILE,
    Instruction,
    arguments,
    compose,
    copies,
    dockerfile,
    healthcheck_cmd,
    image_cmd,
    image_env,
    k8s,
    k8s_documents,
    mlflow_envvars,
    serving_container,
    workdir,
)
from tests.helpers.tracking import REPO

SERVING_PORT = 8000
TEAM_SCRIPT = DEPLOY / "team" / "start_tracking_server.sh"


def serving_envvars() -> dict[str, str]:
    """Environment variable -> option, for every option of `python -m serving` that reads one."""
    from serving.cli import serve

    return {p.envvar: p.name for p in serve.params if isinstance(p, click.Option) and p.envvar}


def known_variables() -> set[str]:
    """What the serving container may be given: our options' variables and MLflow's own."""
    return set(serving_envvars()) | mlflow_envvars() | {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}


def proxy_routes() -> dict[str, str]:
    from serving.app import _ROUTES

    return _ROUTES


# -- Dockerfile ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [DOCKERFILE, PIPELINE_DOCKERFILE], ids=lambda p: p.name)
def test_the_image_builds_from_slim_python_3_11_unless_given_a_base_image_and_installs_requirements_txt(path):
    instructions = dockerfile(path)
    assert instructions[0] == Instruction("ARG", "BASE_IMAGE=python:3.11-slim")
    assert arguments("FROM", path) == ["${BASE_IMAGE}"]
    assert ("requirements.txt", "./") in copies(path)
    runs = arguments("RUN", path)
    assert any(re.fullmatch(r"python3 -m venv /opt/venv && pip install -r requirements\.txt", run) for run in runs)
    # python3 wherever the base has it (/usr/local/bin or /usr/bin); python and pip from the venv.
    assert image_env(path)["PATH"].split(":")[0] == "/opt/venv/bin"
    assert {"/usr/local/bin", "/usr/bin"} <= set(image_env(path)["PATH"].split(":"))


def test_the_two_images_share_every_step_up_to_the_pip_install_so_a_build_cache_serves_both():
    serving, pipeline = dockerfile(DOCKERFILE), dockerfile(PIPELINE_DOCKERFILE)
    shared = next(i for i, step in enumerate(serving) if step.keyword == "RUN") + 1
    assert serving[:shared] == pipeline[:shared]
    assert "pip install" in serving[shared - 1].arguments


@pytest.mark.parametrize("path", [DOCKERFILE, PIPELINE_DOCKERFILE], ids=lambda p: p.name)
def test_the_ca_bundle_for_pip_is_only_a_build_argument_never_copied_or_kept(path):
    assert "PIP_CERT" in arguments("ARG", path)
    assert "PIP_CERT" not in image_env(path)
    assert not [source for source, _ in copies(path) if "cert" in source or source.endswith((".crt", ".pem"))]


def test_every_path_the_image_copies_exists_and_the_service_needs_no_other_package():
    for source, _ in copies():
        assert (REPO / source).exists(), source
    copied = {source.rstrip("/") for source, _ in copies()}
    assert {"iris_core", "serving"} <= copied
    assert not {"steps", "registry_tools"} & copied
    local_imports = set()
    for module in (REPO / "serving").glob("*.py"):
        local_imports |= set(re.findall(r"^\s*(?:from|import) (\w+)", module.read_text(), re.MULTILINE))
    project_packages = {p.name for p in REPO.iterdir() if (p / "__init__.py").exists()}
    assert local_imports & project_packages <= copied


def test_the_image_runs_as_a_user_it_creates_not_as_root():
    (user,) = arguments("USER")
    assert user not in ("root", "0")
    assert any("useradd" in run and re.search(rf"\b{user}\b", run) for run in arguments("RUN"))
    keywords = [i.keyword for i in dockerfile()]
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN")


def test_the_image_command_is_python_m_serving_and_that_module_exists():
    assert image_cmd()[:3] == ["python", "-m", "serving"]
    assert (REPO / "serving" / "__main__.py").is_file()
    assert workdir() == "/app"


def test_the_image_environment_names_only_variables_the_code_reads():
    options = serving_envvars()
    image_variables = {k for k in image_env() if not k.startswith(("PYTHON", "PIP_")) and k != "PATH"}
    assert image_variables <= set(options), image_variables - set(options)
    assert {options["SERVING_HOST"], options["SERVING_PORT"], options["SERVING_MODEL_URI"]} == {
        "host",
        "port",
        "model_uris",
    }
    assert options["SERVING_API_TOKEN"] == "api_token"


def test_the_image_command_and_environment_make_a_valid_serving_configuration(monkeypatch):
    from serving.cli import serve
    from serving.config import ServingConfig

    for name, value in image_env().items():
        monkeypatch.setenv(name, value)
    params = serve.make_context("serving", image_cmd()[3:]).params
    params.pop("log_level")
    config = ServingConfig(**params)
    assert (config.host, config.port, config.model_uri, config.allow_remote) == (
        "0.0.0.0",
        SERVING_PORT,
        "models:/iris@champion",
        True,
    )


def test_listening_on_all_interfaces_without_allow_remote_is_refused(monkeypatch):
    from serving.cli import serve
    from serving.config import ConfigError, ServingConfig

    monkeypatch.setenv("SERVING_HOST", "0.0.0.0")
    params = serve.make_context("serving", []).params
    params.pop("log_level")
    with pytest.raises(ConfigError, match="--allow-remote"):
        ServingConfig(**params)


def test_the_exposed_port_is_the_one_the_service_listens_on():
    assert arguments("EXPOSE") == [str(SERVING_PORT)]
    assert image_env()["SERVING_PORT"] == str(SERVING_PORT)


def test_the_healthcheck_runs_a_copied_script_that_asks_health():
    command = healthcheck_cmd()
    assert command[0] == "python"
    script = command[1]
    assert (script, f"./{script}") in copies() and (REPO / script).is_file()
    assert "/health" in (REPO / script).read_text()
    assert "/health" in proxy_routes()


def test_the_build_context_ignore_file_lets_every_copied_path_through():
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert {source.rstrip("/") for source, _ in copies()} <= allowed


# -- compose ---------------------------------------------------------------------------------


def test_compose_runs_postgres_the_tracking_server_and_serving_and_the_cycle_only_when_asked():
    services = compose()["services"]
    assert set(services) == {"postgres", "tracking", "serving", "cycle"}
    assert [name for name, service in services.items() if service.get("profiles")] == ["cycle"]


def interpolated(value: str, env: dict[str, str]) -> str:
    """Compose's ``${NAME:-default}`` in ``value``, with ``env`` for the .env file (nested defaults included)."""
    pattern = re.compile(r"\$\{(\w+):-([^${}]*)\}")
    while match := pattern.search(value):
        name, default = match.groups()
        value = value[: match.start()] + env.get(name, default) + value[match.end() :]
    return value


def test_compose_serving_captures_into_the_tracking_servers_artifact_store_where_the_cycle_reads_a_window():
    from iris_core.capture import is_capture
    from steps.cycle import main
    from steps.monitoring.window import window_of

    services = compose()["services"]
    serving, cycle = services["serving"], services["cycle"]
    uri = interpolated(serving["environment"]["SERVING_CAPTURE_URI"], {})
    assert uri.startswith("mlflow-artifacts:/") and is_capture(uri)
    assert "--serve-artifacts" in TEAM_SCRIPT.read_text(), "mlflow-artifacts:/ needs a server that serves artifacts"
    assert re.search(r"^# CAPTURE_URI=mlflow-artifacts:/", (DEPLOY / "compose.env.example").read_text(), re.MULTILINE)
    elsewhere = {"CAPTURE_URI": "mlflow-artifacts:/7/capture"}
    assert interpolated(serving["environment"]["SERVING_CAPTURE_URI"], elsewhere) == elsewhere["CAPTURE_URI"]
    for env in ({}, elsewhere):
        argv = [interpolated(arg, env) for arg in cycle["command"]]
        assert argv[:3] == ["python", "-m", "steps.cycle"], argv
        params = main.make_context("cycle", argv[3:]).params
        assert (
            params["predictions"]
            == params["feedback"]
            == interpolated(serving["environment"]["SERVING_CAPTURE_URI"], env)
        )
    window = window_of(params["since"], params["until"], params["hours"], now=lambda: 10**9)
    assert window.until is None and 10**9 - window.since >= 3600
    assert (
        "SERVING_PREDICTION_LOG" not in serving["environment"] and "SERVING_FEEDBACK_LOG" not in serving["environment"]
    )


def test_compose_serving_keeps_its_capture_spool_and_replica_name_across_a_recreated_container():
    from serving.config import ServingConfig

    serving = compose()["services"]["serving"]
    (volume,) = serving["volumes"]
    name, mount = volume.split(":")[:2]
    assert name in compose()["volumes"]
    assert f"{workdir()}/{ServingConfig.capture_spool}".startswith(mount + "/"), "the default spool is on the volume"
    assert serving["environment"]["SERVING_CAPTURE_REPLICA"] == "serving"


def test_compose_cycle_runs_the_pipeline_image_against_the_tracking_service():
    cycle, tracking = compose()["services"]["cycle"], compose()["services"]["tracking"]
    assert (DEPLOY / cycle["build"]["context"]).resolve() == REPO
    assert (REPO / cycle["build"]["dockerfile"]).resolve() == PIPELINE_DOCKERFILE
    assert image_name(cycle["image"]) == image_name(kustomized_images()["iris-pipeline"]["newName"])
    env = cycle["environment"]
    assert set(env) <= mlflow_envvars() | {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}
    assert env["MLFLOW_TRACKING_URI"] == f"http://tracking:{tracking['environment']['MLFLOW_TEAM_PORT']}"
    assert cycle["depends_on"]["tracking"]["condition"] == "service_healthy"


def test_compose_builds_the_image_from_deploy_dockerfile_in_the_repository():
    build = compose()["services"]["tracking"]["build"]
    assert (DEPLOY / build["context"]).resolve() == REPO
    assert (REPO / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    assert compose()["services"]["serving"]["image"] == compose()["services"]["tracking"]["image"]


def test_compose_serving_names_only_variables_the_code_reads_and_points_at_the_tracking_service():
    serving = compose()["services"]["serving"]
    env = serving["environment"]
    assert set(env) <= known_variables(), set(env) - known_variables()
    tracking_port = compose()["services"]["tracking"]["environment"]["MLFLOW_TEAM_PORT"]
    assert env["MLFLOW_TRACKING_URI"] == f"http://tracking:{tracking_port}"
    assert "SERVING_API_TOKEN" in env
    assert serving["ports"] == [f"127.0.0.1:{SERVING_PORT}:{SERVING_PORT}"]


def test_compose_tracking_runs_the_team_script_with_variables_it_reads():
    tracking = compose()["services"]["tracking"]
    (script,) = tracking["command"]
    assert (REPO / script).resolve() == TEAM_SCRIPT and TEAM_SCRIPT.stat().st_mode & 0o111
    assert any(script.startswith(source) for source, _ in copies() if source.endswith("/")), (
        "the image lacks the script"
    )
    text = TEAM_SCRIPT.read_text()
    for name in tracking["environment"]:
        if name.startswith(("MLFLOW_TEAM_", "MLFLOW_AUTH_")):
            assert name in text, name
    port = tracking["environment"]["MLFLOW_TEAM_PORT"]
    assert tracking["ports"] == [f"127.0.0.1:{port}:{port}"]
    assert f"tracking:{port}" in tracking["environment"]["MLFLOW_TEAM_ALLOWED_HOSTS"].split(",")
    assert tracking["volumes"][0].endswith(":" + tracking["environment"]["MLFLOW_TEAM_DATA_DIR"])


def test_compose_databases_are_the_ones_postgres_creates():
    services = compose()["services"]
    postgres, tracking = services["postgres"], services["tracking"]["environment"]
    init = next(v.split(":")[0] for v in postgres["volumes"] if "docker-entrypoint-initdb.d" in v)
    created = {
        postgres["environment"]["POSTGRES_DB"],
        *re.findall(r"CREATE DATABASE (\w+)", (DEPLOY / init).read_text()),
    }
    user = postgres["environment"]["POSTGRES_USER"]
    for key in ("MLFLOW_TEAM_BACKEND_STORE_URI", "MLFLOW_TEAM_AUTH_DATABASE_URI"):
        match = re.fullmatch(r"postgresql://(\w+)@postgres:5432/(\w+)", tracking[key])
        assert match and match.group(1) == user and match.group(2) in created, key
    assert tracking["PGPASSWORD"] == postgres["environment"]["POSTGRES_PASSWORD"]


def test_compose_secrets_come_from_the_env_file_not_from_the_compose_file():
    text = (DEPLOY / "compose.yaml").read_text()
    for name in ("POSTGRES_PASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD", "SERVING_API_TOKEN"):
        assert re.search(rf"\$\{{{name}:\?", text), name
        assert re.search(rf"^{name}=", (DEPLOY / "compose.env.example").read_text(), re.MULTILINE), name
    assert ".env" in (DEPLOY / ".gitignore").read_text().split()


# -- Kubernetes ------------------------------------------------------------------------------


def test_the_deployment_probes_ready_and_health_on_the_service_port():
    container = serving_container()
    (port,) = container["ports"]
    assert port["containerPort"] == SERVING_PORT
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": port["name"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": port["name"]}
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    assert {"/ready", "/health"} <= set(proxy_routes())


def test_the_deployment_sets_resource_requests_and_limits():
    resources = serving_container()["resources"]
    for kind in ("requests", "limits"):
        assert set(resources[kind]) == {"cpu", "memory"}


def expanded_only(env: list[dict]) -> set[str]:
    """Variables set only for other values to expand (``$(POD_NAME)``), which no program reads."""
    values = " ".join(e.get("value", "") for e in env)
    return {e["name"] for e in env if f"$({e['name']})" in values}


def test_the_tracking_uri_and_the_token_come_from_the_secret_the_example_defines():
    (secret,) = [s for s in k8s("Secret") if s["metadata"]["name"] == "iris-serving"]
    env = {e["name"]: e for e in serving_container()["env"]}
    read = set(env) - expanded_only(serving_container()["env"])
    assert read <= known_variables(), read - known_variables()
    for name in ("MLFLOW_TRACKING_URI", "SERVING_API_TOKEN"):
        reference = env[name]["valueFrom"]["secretKeyRef"]
        assert reference["name"] == secret["metadata"]["name"]
        assert reference["key"] in secret["stringData"]
        assert not reference.get("optional", False)


def test_the_deployment_runs_as_the_images_user_without_privileges():
    (deployment,) = k8s("Deployment")
    security = deployment["spec"]["template"]["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True
    (run,) = [r for r in arguments("RUN") if "useradd" in r]
    assert f"--uid {security['runAsUser']}" in run
    assert serving_container()["securityContext"]["allowPrivilegeEscalation"] is False


def test_the_service_selects_the_deployments_pods_and_targets_its_port():
    (deployment,) = k8s("Deployment")
    (service,) = k8s("Service")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in (SERVING_PORT, serving_container()["ports"][0]["name"])


def test_kustomization_lists_every_manifest_but_the_example_secret():
    import yaml

    listed = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())["resources"]
    manifests = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert set(listed) == manifests


# -- one image, and resources from a measurement ----------------------------------------------

IMAGE = "iris-serving"


def image_name(reference: str) -> str:
    """``registry.example.com/iris-serving:1`` -> ``iris-serving``."""
    return reference.rsplit("/", 1)[-1].split(":", 1)[0]


def kustomized_images() -> dict[str, dict]:
    import yaml

    return {e["name"]: e for e in yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())["images"]}


def manifest_images() -> set[str]:
    """Every container image the Kubernetes manifests name (the kustomization sets them)."""
    found = set()
    for document in k8s_documents():
        spec = document.get("spec", {})
        spec = spec.get("jobTemplate", {}).get("spec", spec)
        for container in spec.get("template", {}).get("spec", {}).get("containers", []):
            found.add(container["image"])
    return found


def test_one_image_name_everywhere_the_serving_image_is_built_run_or_deployed():
    named = {
        f"compose {name}": service["image"]
        for name, service in compose()["services"].items()
        if name not in ("postgres", "cycle")  # cycle: the pipeline image
    }
    named["deployment"] = serving_container()["image"]
    named["kustomization"] = kustomized_images()[serving_container()["image"]]["newName"]
    for where, text in (
        ("docs/deployment.md", (REPO / "docs" / "deployment.md").read_text()),
        ("Dockerfile", (DEPLOY / "Dockerfile").read_text()),
    ):
        for i, tag in enumerate(re.findall(r"docker build -f deploy/Dockerfile -t (\S+)", text)):
            named[f"{where} docker build {i}"] = tag
    assert {where: image_name(ref) for where, ref in named.items()} == dict.fromkeys(named, IMAGE)


def test_kustomize_sets_every_image_of_the_manifests_so_nobody_edits_them():
    images = kustomized_images()
    assert manifest_images() == set(images) and IMAGE in images
    assert all({"newName", "newTag"} <= set(entry) for entry in images.values())
    assert all(":" not in image for image in manifest_images())  # the tag is the kustomization's
    deployment_page = (REPO / "docs" / "deployment.md").read_text()
    assert "deployment.yaml" not in re.search(r"kubectl apply -k deploy/k8s.*", deployment_page)[0]


def mebibytes(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)(Mi|Gi)", quantity).groups()
    return float(number) * (1024 if unit == "Gi" else 1)


def measured() -> dict[tuple[str, str], tuple[float, int]]:
    """Rows of the measurement beside the manifests: (store, moment) -> (RSS MiB, model servers)."""
    text = (DEPLOY / "k8s" / "MEMORY.md").read_text()
    rows = re.findall(r"^\| (http|sqlite) \| (at rest|peak|after) \| (\d+) \| (\d) \|", text, re.MULTILINE)
    return {(store, moment): (float(rss), int(servers)) for store, moment, rss, servers in rows}


def test_the_memory_request_and_limit_cover_what_the_measured_process_tree_held():
    rows = measured()
    assert {moment for _, moment in rows} == {"at rest", "peak", "after"} and ("http", "peak") in rows
    for (_, moment), (_, servers) in rows.items():
        assert servers == (3 if moment == "peak" else 2)  # live, warm, and at the peak the new version starting
    resources = serving_container()["resources"]
    assert mebibytes(resources["limits"]["memory"]) >= max(rss for (_, m), (rss, _) in rows.items() if m == "peak")
    assert mebibytes(resources["requests"]["memory"]) >= max(rss for (_, m), (rss, _) in rows.items() if m != "peak")
    assert "MEMORY.md" in (DEPLOY / "k8s" / "deployment.yaml").read_text()


def test_every_way_to_stop_the_proxy_waits_for_its_drain():
    """SIGTERM lets requests in flight finish for --timeout + 5 s; a stop that kills sooner cuts them off."""
    from serving.config import ServingConfig

    drain_s = ServingConfig().timeout + 5
    (deployment,) = k8s("Deployment")
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= drain_s
    grace = compose()["services"]["serving"]["stop_grace_period"]
    assert re.fullmatch(r"\d+s", grace) and int(grace[:-1]) >= drain_s
    (seconds,) = re.findall(r"stop --time (\d+)", (DEPLOY / "podman" / "build_and_run.sh").read_text())
    assert int(seconds) >= drain_s
