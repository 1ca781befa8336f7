"""The metric names and label matchers a PromQL expression selects, read from deploy/prometheus and deploy/grafana.

Not a PromQL parser: a tokenizer and a walk that knows which identifiers are functions,
aggregations, keywords or label lists (``by (...)``, ``on (...)``, ``group_left (...)``), so
that what is left are the selectors. Debian's Prometheus (2.42) has no API that parses a
query (``/api/v1/parse_query`` came in 2.45), and a selector this walk misreads shows up as a
metric the scrape lacks, naming it.
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.helpers.tracking import REPO

PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
RULES = sorted((REPO / "deploy" / "prometheus").glob("*.rules.yaml"))
RULE_TESTS = sorted(PROMETHEUS_DIR.glob("*_test.yaml"))
DASHBOARDS = sorted((REPO / "deploy" / "grafana").glob("*.json"))

_TOKEN = re.compile(
    r"""
    (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    |(?P<range>\[[^\]]*\])
    |(?P<variable>\$\{[^}]*\}|\$\w+)
    |(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[a-zA-Z]*)
    |(?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
    |(?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=,(){}@])
    |(?P<space>\s+)
    """,
    re.VERBOSE,
)
_LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk"}
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "quantile"} | _AGGREGATIONS | _LABEL_LISTS
_MATCH_OPS = {"=", "!=", "=~", "!~"}


@dataclass(frozen=True)
class Selector:
    """One vector selector: ``name{label op "value", ...}``."""

    name: str
    matchers: tuple[tuple[str, str, str], ...] = ()

    @property
    def labels(self) -> set[str]:
        """Labels the selector needs to be present: every matcher but ``label=""`` (which asks for its absence)."""
        return {label for label, op, value in self.matchers if not (op == "=" and value == "")}

    def __str__(self) -> str:
        inside = ", ".join(f'{label}{op}"{value}"' for label, op, value in self.matchers)
        return f"{self.name}{{{inside}}}" if inside else self.name


def tokens(expr: str) -> list[tuple[str, str]]:
    found, position = [], 0
    while position < len(expr):
        match = _TOKEN.match(expr, position)
        if match is None:
            raise ValueError(f"cannot read {expr[position : position + 20]!r} in {expr!r}")
        position = match.end()
        if match.lastgroup != "space":
            found.append((match.lastgroup, match.group()))
    return found


def selectors(expr: str) -> list[Selector]:
    """Every vector selector of ``expr``, in order."""
    toks, found, index = tokens(expr), [], 0
    while index < len(toks):
        kind, text = toks[index]
        following = toks[index + 1][1] if index + 1 < len(toks) else None
        if kind == "ident" and text in _LABEL_LISTS and following == "(":
            index = toks.index(("op", ")"), index) + 1
            continue
        if kind == "ident" and (following == "(" or text.lower() in _KEYWORDS):
            index += 1
            continue
        if kind == "ident" or (kind, text) == ("op", "{"):
            name = text if kind == "ident" else ""
            index += 1 if kind == "ident" else 0
            matchers = ()
            if index < len(toks) and toks[index] == ("op", "{"):
                index, matchers = _matchers(toks, index + 1)
            if not name:
                name = next((value for label, op, value in matchers if label == "__name__" and op == "="), "")
                matchers = tuple(m for m in matchers if m[0] != "__name__")
            found.append(Selector(name, matchers))
            continue
        index += 1
    return found


def _matchers(toks, index) -> tuple[int, tuple]:
    """The ``label op "value"`` triples up to the closing brace; the index after it."""
    found = []
    while toks[index] != ("op", "}"):
        if toks[index] == ("op", ","):
            index += 1
            continue
        (_, label), (_, op), (kind, value) = toks[index : index + 3]
        if op not in _MATCH_OPS or kind != "string":
            raise ValueError(f"not a label matcher: {label} {op} {value}")
        found.append((label, op, json.loads(value) if value.startswith('"') else value[1:-1]))
        index += 3
    return index + 1, tuple(found)


# -- where the expressions are -------------------------------------------------------------------


def rule_groups(path: Path) -> list[dict]:
    return yaml.safe_load(path.read_text())["groups"]


def rules(paths=RULES) -> list[dict]:
    return [rule for path in paths for group in rule_groups(path) for rule in group["rules"]]


def recorded_names(paths=RULES) -> set[str]:
    return {rule["record"] for rule in rules(paths) if "record" in rule}


def panels(dashboard: dict) -> list[dict]:
    """Every panel, rows' nested panels included."""
    found = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found += panels(panel)
    return found


def dashboard_queries(paths=DASHBOARDS) -> dict[str, str]:
    """``"dashboard / panel title #n"`` -> the PromQL of each of its Prometheus targets."""
    queries = {}
    for path in paths:
        for panel in panels(json.loads(path.read_text())):
            for number, target in enumerate(panel.get("targets", []), 1):
                if target.get("expr"):
                    queries[f"{path.name} / {panel.get('title')} #{number}"] = target["expr"]
    return queries


def all_expressions() -> dict[str, str]:
    """Every PromQL expression of the rules and the dashboards, by where it is."""
    found = {f"rule {rule.get('record') or rule['alert']}": rule["expr"] for rule in rules()}
    return {**found, **dashboard_queries()}


def scraped_selectors() -> dict[Selector, list[str]]:
    """The selectors of metrics a proxy must expose (recorded series left out), each with where it is used."""
    recorded = recorded_names()
    used: dict[Selector, list[str]] = {}
    for where, expr in all_expressions().items():
        for selector in selectors(expr):
            if selector.name not in recorded:
                used.setdefault(selector, []).append(where)
    return used


def grafana_instant(expr: str) -> str:
    """A dashboard query as Prometheus's own API takes it: Grafana's variables given plain values."""
    replacements = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m", "${datasource}": ""}
    for variable, value in replacements.items():
        expr = expr.replace(variable, value)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)
