"""Podman for the deploy tests: the reader's script (deploy/podman/build_and_run.sh), podman itself, and kube play.

Podman runs with ``--runtime runc --cgroup-manager cgroupfs`` (crun and systemd cgroups do
not work on these machines) and with limits the machine grants (see the script's header).
"""

import base64
import copy
import json
import os
import resource
import subprocess
from pathlib import Path

import yaml

from tests.helpers.deploy.specs import DEPLOY
from tests.helpers.support import stop_process
from tests.helpers.tracking import REPO

SCRIPT = DEPLOY / "podman" / "build_and_run.sh"
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs"]
# Images of their own, so the tests never replace what a reader built with the script's defaults.
SERVING_IMAGE = "localhost/iris-serving:test"
PIPELINE_IMAGE = "localhost/iris-pipeline:test"
IMAGES = (SERVING_IMAGE, PIPELINE_IMAGE)
LOCAL_BASE = "localhost/bookworm-py:latest"  # the script's Debian base image
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"  # where the build mounts the host's bundle for pip
LIMITS = ("--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096")
BUILD_TIMEOUT = 1500  # the Debian base (~2 min) and one pip install of requirements.txt (~3 min) on a fresh machine
# slirp4netns's address for the host's loopback, from inside a pod run with allow_host_loopback=true.
HOST_LOOPBACK_FROM_POD = "10.0.2.2"


def script_env(**env: str) -> dict:
    """The environment the script runs in: this one, the test's images and the script's Debian base."""
    settings = {"BASE_IMAGE": LOCAL_BASE, "SERVING_IMAGE": SERVING_IMAGE, "PIPELINE_IMAGE": PIPELINE_IMAGE, **env}
    return {**os.environ, **settings}


def start_script(command: str, log: Path, **env: str) -> subprocess.Popen:
    """``deploy/podman/build_and_run.sh COMMAND`` started as a reader runs it, output into ``log``; not waited for."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [str(SCRIPT), command],
            cwd=REPO,
            env=script_env(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def script(command: str, log: Path, timeout: float, **env: str) -> subprocess.CompletedProcess:
    """The script's COMMAND run to its end; its exit code and the end of its output."""
    proc = start_script(command, log, **env)
    try:
        code = proc.wait(timeout=timeout)
    finally:
        stop_process(proc)
    return subprocess.CompletedProcess(proc.args, code, log.read_text(errors="replace")[-4000:], "")


def podman(*args: str, timeout: float = 120, env: dict | None = None, check: bool = True) -> str:
    done = subprocess.run(
        [*PODMAN, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done.stdout.strip()


def inspect(name: str, template: str) -> str:
    return podman("inspect", "--format", template, name)


def run_in(image: str, *command: str) -> str:
    """The output of ``command`` in a throwaway container of ``image``."""
    return podman("run", "--rm", *LIMITS, "--entrypoint", command[0], image, *command[1:])


def containers_conf(directory: Path) -> Path:
    """A containers.conf giving containers the limits this machine grants, for ``kube play`` (it takes no --ulimit)."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    path = directory / "containers.conf"
    path.write_text(f'[containers]\ndefault_ulimits = ["nofile={nofile}:{nofile}", "nproc=4096:4096"]\n')
    return path


def kube_secret(directory: Path, values: dict[str, str]) -> Path:
    """The Secret's data as podman 4.3's ``secretKeyRef`` reads a podman secret: a JSON map of base64 values."""
    path = directory / "secret.json"
    path.touch(mode=0o600)
    path.write_text(json.dumps({k: base64.b64encode(v.encode()).decode() for k, v in values.items()}))
    return path


def deployment_for_podman(suffix: str, image: str, host_port: int) -> tuple[list[dict], dict]:
    """deploy/k8s's Deployment and its capture ConfigMap, changed only where one podman host needs it.

    - the names of the Deployment, its Secret and its ConfigMap get ``suffix``, so that runs never meet;
    - one replica: podman makes a pod per replica, and two cannot publish the same host port;
    - the image is the one just built;
    - the container port is published on 127.0.0.1:``host_port`` (podman publishes a
      containerPort on 0.0.0.0 of the host otherwise).

    Probes, security contexts, resources, environment, the capture location and volumes stay as written.
    Returns the documents and the names used.
    """
    documents = {}
    for name in ("deployment.yaml", "capture.yaml"):
        (document,) = [d for d in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()) if d]
        documents[document["kind"]] = copy.deepcopy(document)
    deployment, config = documents["Deployment"], documents["ConfigMap"]
    names = {
        "deployment": f"{deployment['metadata']['name']}-{suffix}",
        "config": f"{config['metadata']['name']}-{suffix}",
        "secret": f"iris-serving-{suffix}",
    }
    deployment["metadata"]["name"] = names["deployment"]
    deployment["spec"]["replicas"] = 1
    config["metadata"]["name"] = names["config"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    container["image"] = image
    (port,) = container["ports"]
    port.update(hostIP="127.0.0.1", hostPort=host_port)
    for variable in container["env"]:
        for kind, new_name in (("secretKeyRef", names["secret"]), ("configMapKeyRef", names["config"])):
            reference = variable.get("valueFrom", {}).get(kind)
            if reference:
                reference["name"] = new_name
    names["pod"] = f"{names['deployment']}-pod-0"
    names["container"] = f"{names['pod']}-{container['name']}"
    return [config, deployment], names


def model_server_group(container: str) -> int:
    """The host pid of the `mlflow models serve` a container's proxy started: the leader of its process group."""
    root = int(inspect(container, "{{.State.Pid}}"))
    for pid in descendants(root):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"models" in argv and b"serve" in argv and os.getpgid(pid) == pid:
            return pid
    raise AssertionError(f"no model server runs in {container}")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (host pids), read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, pending = [], [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found
