"""Each setting of ``python -m serving`` declared once: its type, default, bounds, variable and help.

A setting is a field of ``serving.config.ServingConfig`` made by ``setting``: the field gives
its name, type and default, and an ``Option`` in its metadata the rest. From that one
declaration come both the command line's options (``click_options``: click ranges, the
``SERVING_<NAME>`` variable, the help) and the checks of a configuration built in code, as
tests and benchmarks build it (``check_settings``): a bound cannot hold on the command line
and not in code, or the reverse. MLServer declares its settings so, with pydantic; here a
frozen dataclass does.
"""

import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from functools import cache
from typing import Any

import click

from iris_core.command_line import stacked
from serving.errors import ConfigError

_OPTION = "option"  # the metadata key of a setting's Option


@dataclass(frozen=True)
class Bounds:
    """The values a number may take: inclusive, unless ``above``: then it must be greater than ``low``."""

    low: float | None = None
    high: float | None = None
    above: bool = False

    def refusal(self, value: Any) -> str | None:
        """Why ``value`` is outside (a NaN is outside any bounds), or None when it is inside."""
        too_low = self.low is not None and not (value > self.low if self.above else value >= self.low)
        if not too_low and (self.high is None or value <= self.high):
            return None
        if self.low is not None and self.high is not None:
            return f"must be between {self.low} and {self.high}, got {value}"
        if self.low is not None:
            return f"must be {'>' if self.above else '>='} {self.low}, got {value}"
        return f"must be <= {self.high}, got {value}"

    def click_type(self, number: type) -> click.ParamType:
        ranged = click.IntRange if number is int else click.FloatRange
        return ranged(self.low, self.high, min_open=self.above)


COUNT = Bounds(1)  # one or more
NOT_NEGATIVE = Bounds(0)
POSITIVE = Bounds(0, above=True)  # more than zero: seconds, a ratio
SHARE = Bounds(0, 1)  # a share of requests or rows
PORT = Bounds(0, 65535)  # 0: any free port


@dataclass(frozen=True)
class Option:
    """What the command line and the checks need to know of a setting beyond its name, type and default."""

    bounds: Bounds | None = None
    help: str | None = None
    flag: str | None = None  # --<name> unless given, e.g. --batching/--no-batching
    envvar: str | None = None  # SERVING_<NAME> unless given
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    # A value given as text (the command line's, or a string in code) made into the setting's own.
    # It raises ValueError with what is wrong, which the flag is put in front of.
    parse: Callable[[Any], Any] | None = None
    multiple: bool = False  # repeatable; in the variable, several values separated by commas
    default_text: str | None = None  # what --help shows as the default when the default is worked out later
    # Filled from the field (``options_of``), or given for an option that is no setting (--log-level):
    name: str = ""
    type: Any = str
    default: Any = None

    def __post_init__(self):
        if self.name:
            object.__setattr__(self, "flag", self.flag or "--" + self.name.replace("_", "-"))
            object.__setattr__(self, "envvar", self.envvar or f"SERVING_{self.name.upper()}")

    def refusal(self, value: Any) -> str | None:
        """Why ``value`` is outside the bounds or the choices, or None when it is inside."""
        if value is None:
            return None
        if self.choices and value not in self.choices:
            return f"must be one of {', '.join(self.choices)}, got {value!r}"
        return self.bounds.refusal(value) if self.bounds else None

    def click_option(self) -> Callable:
        shown = f"{self.help}  [default: {self.default_text}]" if self.default_text else self.help
        settings = {"envvar": self.envvar, "show_envvar": True, "help": shown, "metavar": self.metavar}
        if self.type is bool and "/" not in self.flag:
            return click.option(self.flag, self.name, is_flag=True, **settings)
        if self.default is not None:
            settings.update(default=self.default, show_default=True)
        return click.option(self.flag, self.name, type=self._click_type(), multiple=self.multiple, **settings)

    def _click_type(self) -> click.ParamType | None:
        if self.choices:
            return click.Choice(self.choices)
        if self.parse is not None:
            return _Parsed(self.parse)
        if self.multiple:
            return _Listed()
        if self.bounds is not None:
            return self.bounds.click_type(self.type)
        return None if self.type is bool else click.types.convert_type(self.type)


class _Parsed(click.ParamType):
    """A composite value (``--canary 10,50,100``) parsed by its setting's own parser."""

    name = "text"

    def __init__(self, parse: Callable[[Any], Any]):
        self.parse = parse

    def convert(self, value, param, ctx):
        try:
            return self.parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class _Listed(click.ParamType):
    """One value of a repeatable option; in the environment variable, several separated by commas."""

    name = "text"
    envvar_list_splitter = ","

    def convert(self, value, param, ctx):
        return value.strip() if isinstance(value, str) else value


def setting(default: Any, bounds: Bounds | None = None, *, repr: bool = True, **option: Any) -> Any:
    """A field of the settings class with its default, and the ``Option`` that says the rest of it."""
    return field(default=default, repr=repr, metadata={_OPTION: Option(bounds, **option)})


@cache
def options_of(settings: type) -> tuple[Option, ...]:
    """Every setting of ``settings`` declared with ``setting``, its name, type and default filled in."""
    return tuple(
        replace(item.metadata[_OPTION], name=item.name, type=_value_type(item.type), default=item.default)
        for item in fields(settings)
        if _OPTION in item.metadata
    )


def click_options(options: tuple[Option, ...]) -> Callable:
    """A decorator that gives a command these options, in this order."""
    return stacked(*(option.click_option() for option in options))


def check_settings(settings: Any) -> None:
    """Parse each setting given as text that has a parser, and refuse any outside its bounds, naming its flag."""
    for option in options_of(type(settings)):
        value = getattr(settings, option.name)
        if option.parse is not None:
            try:
                value = option.parse(value)
            except ValueError as exc:
                raise ConfigError(f"{option.flag} {exc}") from None
            object.__setattr__(settings, option.name, value)
        problem = option.refusal(value)
        if problem:
            raise ConfigError(f"{option.flag} {problem}")


def _value_type(annotation: Any) -> Any:
    """``int`` of ``int | None``; the annotation itself otherwise."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    return annotation
