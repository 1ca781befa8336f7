"""Each serving setting declared once: the command line, its environment variables and a configuration built in
code all hold it to the same bounds."""

import click
import pytest

from serving.cli import serve
from serving.config import ServingConfig
from serving.errors import ConfigError
from serving.options import options_of

# The bounds users rely on, written out apart from the declarations: a bound dropped there fails here.
AT_LEAST_ONE = """--workers --max-body-bytes --max-rows --max-connections --max-batch-rows --keep-logs --log-backups
    --answer-memory-rows --accuracy-window --capture-spool-bytes --capture-file-rows --min-requests"""
MORE_THAN_ZERO = """--header-timeout --body-timeout --timeout --poll-interval --start-timeout --capture-file-seconds
    --shadow-timeout --shadow-report-interval --canary-step --max-latency-ratio"""
ZERO_OR_MORE = "--keep-warm --max-batch-wait-ms --log-max-bytes --bake"
SHARES = "--log-sample-rate --shadow-rate --compare-rate --max-error-rate --max-disagreement --max-class-shift"
# flag: (lowest, highest, whether the lowest itself is refused)
BOUNDS = {
    **dict.fromkeys(AT_LEAST_ONE.split(), (1, None, False)),
    **dict.fromkeys(MORE_THAN_ZERO.split(), (0, None, True)),
    **dict.fromkeys(ZERO_OR_MORE.split(), (0, None, False)),
    **dict.fromkeys(SHARES.split(), (0, 1, False)),
    "--port": (0, 65535, False),
    "--metrics-port": (1, 65535, False),
    "--grpc-port": (0, 65535, False),
}
OPTIONS = {option.flag: option for option in options_of(ServingConfig)}


def edges(flag: str) -> tuple[list, list]:
    """Values just outside the bounds, and the bounds themselves where they are allowed."""
    low, high, above = BOUNDS[flag]
    step = 1 if OPTIONS[flag].type is int else 0.5
    refused = [low if above else low - step] + ([high + step] if high is not None else [])
    allowed = ([] if above else [low]) + ([high] if high is not None else [])
    return refused, allowed


def command_line(*args: str) -> dict:
    return serve.make_context("serve", list(args)).params


def refusal(*args: str) -> str:
    """The one line click refuses the command line (or an environment variable) with."""
    with pytest.raises(click.BadParameter) as refused:
        command_line(*args)
    return refused.value.format_message()


def test_every_bounded_setting_has_its_bounds_written_out_here():
    bounded = {flag for flag, option in OPTIONS.items() if option.bounds is not None}
    assert bounded == set(BOUNDS)
    numbers = {flag for flag, option in OPTIONS.items() if option.type in (int, float)}
    assert numbers == set(BOUNDS), "every number has a bound"


@pytest.mark.parametrize("flag", sorted(BOUNDS))
def test_a_value_outside_a_bound_is_refused_on_the_command_line_from_the_environment_and_in_code(flag, monkeypatch):
    option = OPTIONS[flag]
    refused, _ = edges(flag)
    for value in refused:
        assert refusal(flag, str(value)).startswith(f"Invalid value for '{flag}'")
        with monkeypatch.context() as env:
            env.setenv(option.envvar, str(value))
            assert refusal().startswith(f"Invalid value for '{flag}' (env var: '{option.envvar}')")
        with pytest.raises(ConfigError, match=f"^{flag} must be "):
            ServingConfig(**{option.name: value})


@pytest.mark.parametrize("flag", sorted(BOUNDS))
def test_a_value_on_an_inclusive_bound_is_taken_on_the_command_line_and_in_code(flag):
    option = OPTIONS[flag]
    _, allowed = edges(flag)
    for value in allowed:
        assert command_line(flag, str(value))[option.name] == value
        assert getattr(ServingConfig(**{option.name: value}), option.name) == value


def test_nan_is_outside_every_bound_in_code():
    with pytest.raises(ConfigError, match="^--timeout must be > 0, got nan$"):
        ServingConfig(timeout=float("nan"))
    with pytest.raises(ConfigError, match="^--log-sample-rate must be between 0 and 1, got nan$"):
        ServingConfig(log_sample_rate=float("nan"))


def test_a_choice_outside_the_declared_ones_is_refused_on_the_command_line_and_in_code():
    assert refusal("--env-manager", "docker").startswith("Invalid value for '--env-manager'")
    with pytest.raises(ConfigError, match="^--env-manager must be one of local, uv, virtualenv, conda, got 'docker'"):
        ServingConfig(env_manager="docker")


def test_canary_steps_are_parsed_by_one_parser_on_the_command_line_and_in_code(monkeypatch):
    assert command_line("--canary", "10,50,100")["canary"] == (10, 50, 100)
    assert ServingConfig(canary="10,50,100").canary == (10, 50, 100) == ServingConfig(canary=(10, 50, 100)).canary
    assert command_line()["canary"] == ServingConfig().canary == (100,)
    monkeypatch.setenv("SERVING_CANARY", "5,3")
    assert refusal() == (
        "Invalid value for '--canary' (env var: 'SERVING_CANARY'): "
        "must rise from above 0 to 100 (such as 10,50,100), got '5,3'"
    )
    with pytest.raises(ConfigError, match=r"^--canary must rise from above 0 to 100 \(such as 10,50,100\), got '5,3'$"):
        ServingConfig(canary="5,3")
    with pytest.raises(ConfigError, match="^--canary must be percentages"):
        ServingConfig(canary="ten")


def test_every_option_but_the_log_level_is_a_setting_and_every_setting_an_option():
    options = {p.name for p in serve.params if isinstance(p, click.Option) and p.name != "help"}
    internal = {"liveness_interval", "liveness_timeout", "liveness_misses"}  # tuned by tests, not by users
    assert options == {*ServingConfig.__dataclass_fields__} - internal | {"log_level"}


def test_the_command_lines_defaults_are_the_settings_defaults():
    params = command_line()
    params.pop("log_level")
    assert ServingConfig(**params) == ServingConfig()


def test_a_configuration_shown_or_logged_never_carries_the_token_or_the_webhook_secret():
    shown = repr(ServingConfig(api_token="token-0f3a9c", webhook_secret="secret-77d1e2"))
    assert "token-0f3a9c" not in shown and "secret-77d1e2" not in shown
