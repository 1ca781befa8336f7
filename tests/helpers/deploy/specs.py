"""Readers for deploy/: the Dockerfile's instructions, the compose file and the Kubernetes manifests."""

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.helpers.tracking import REPO

DEPLOY = REPO / "deploy"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def dockerfile(path: Path = DEPLOY / "Dockerfile") -> list[Instruction]:
    """Instructions in order, with continuation lines joined and comments dropped."""
    instructions, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        pending += (" " if pending else "") + line.rstrip("\\").strip()
        if not line.endswith("\\"):
            keyword, _, arguments = pending.partition(" ")
            instructions.append(Instruction(keyword.upper(), arguments.strip()))
            pending = ""
    return instructions


DOCKERFILE = DEPLOY / "Dockerfile"
PIPELINE_DOCKERFILE = DEPLOY / "Dockerfile.pipeline"


def arguments(keyword: str, path: Path = DOCKERFILE) -> list[str]:
    return [i.arguments for i in dockerfile(path) if i.keyword == keyword]


def exec_form(text: str) -> list[str]:
    """A JSON-array CMD (the only form the project uses: no shell between Docker and Python)."""
    value = json.loads(text)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), text
    return value


def image_env(path: Path = DOCKERFILE) -> dict[str, str]:
    env = {}
    for text in arguments("ENV", path):
        for pair in shlex.split(text):
            name, _, value = pair.partition("=")
            env[name] = value
    return env


def image_cmd(path: Path = DOCKERFILE) -> list[str]:
    (cmd,) = arguments("CMD", path)
    return exec_form(cmd)


def healthcheck_cmd() -> list[str]:
    (check,) = arguments("HEALTHCHECK")
    return exec_form(check.split(" CMD ", 1)[1])


def workdir(path: Path = DOCKERFILE) -> str:
    (directory,) = arguments("WORKDIR", path)
    return directory


def copies(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(source in the build context, destination relative to WORKDIR) of every COPY."""
    pairs = []
    for text in arguments("COPY", path):
        *sources, destination = shlex.split(text)
        assert not any(s.startswith("--") for s in sources), f"COPY flags are not expected: {text}"
        pairs += [(source, destination) for source in sources]
    return pairs


def stage_image_files(target: Path) -> Path:
    """Lay out the files the image's COPY instructions put under WORKDIR, and nothing else."""
    import shutil

    for source, destination in copies():
        origin = REPO / source
        place = (
            target / destination
            if not destination.endswith("/") or origin.is_dir()
            else target / destination / origin.name
        )
        if origin.is_dir():
            shutil.copytree(origin, place, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
        else:
            place.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, place)
    return target


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def k8s_documents() -> list[dict]:
    documents = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        documents += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return documents


def k8s(kind: str) -> list[dict]:
    return [d for d in k8s_documents() if d.get("kind") == kind]


def mlflow_envvars() -> set[str]:
    import mlflow.environment_variables as variables

    return {v.name for v in vars(variables).values() if hasattr(v, "name") and hasattr(v, "get")}


def serving_container() -> dict:
    (deployment,) = k8s("Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container
