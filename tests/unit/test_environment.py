"""The three environment files agree, and this environment is the one they describe."""

import importlib.metadata
import re

import yaml

from tests.helpers.tracking import REPO


def pinned_requirements() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"requirements.txt must pin every package: {line!r}"
            pins[name.strip().lower()] = version.strip()
    return pins


def test_requirements_pin_mlflow_3_17_2_and_the_chosen_packages():
    pins = pinned_requirements()
    assert pins["mlflow"] == "3.17.2"
    assert {"scikit-learn", "pandas", "matplotlib", "click", "requests"} <= set(pins)


def test_python_env_yaml_installs_requirements_txt_on_python_3_11():
    env = yaml.safe_load((REPO / "python_env.yaml").read_text())
    assert str(env["python"]) == "3.11"
    assert env["dependencies"] == ["-r requirements.txt"]


def test_conda_yaml_installs_requirements_txt_on_python_3_11():
    env = yaml.safe_load((REPO / "conda.yaml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    assert pip_sections == [["-r requirements.txt"]]


def test_mlproject_uses_python_env_yaml():
    project = yaml.safe_load((REPO / "MLproject").read_text())
    assert project["python_env"] == "python_env.yaml"


def test_installed_packages_match_the_pins():
    mismatched = {
        name: (version, importlib.metadata.version(name))
        for name, version in pinned_requirements().items()
        if importlib.metadata.version(name) != version
    }
    assert not mismatched


def test_every_entry_point_runs_a_steps_module_with_its_declared_params():
    project = yaml.safe_load((REPO / "MLproject").read_text())
    for name, entry in project["entry_points"].items():
        command = entry["command"]
        module = re.match(r"python -m (steps\.\w+)", command).group(1)
        assert (REPO / (module.replace(".", "/") + ".py")).is_file(), name
        assert set(re.findall(r"\{(\w+)\}", command)) == set(entry.get("parameters", {})), name
