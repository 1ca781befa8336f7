"""How the command line shows versions and alias moves: aligned text for people, JSON for programs."""

import json

from iris_core.alias_history import AliasMove
from iris_core.contract import Tag
from registry_tools.versions import VersionSummary, utc_time

MISSING = "-"
REASON_WIDTH = 72  # the full reason is in --json


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns separated by two spaces, without trailing blanks."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    lines = [headers, *rows]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines)


def number(value: float | None) -> str:
    return MISSING if value is None else f"{value:.4f}"


def flat(text: str, limit: int | None = None) -> str:
    """Reasons may hold newlines and run long; a table row must stay one readable row."""
    text = " ".join(text.split())
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."


def versions_table(versions: list[VersionSummary]) -> str:
    rows = [
        [
            v.version,
            ",".join(v.aliases) or MISSING,
            v.created,
            (v.run_id or MISSING)[:8],
            number(v.accuracy),
            number(v.f1_score),
            v.gate_decision or MISSING,
            v.data_source or MISSING,
        ]
        for v in versions
    ]
    return table(["VERSION", "ALIASES", "CREATED (UTC)", "RUN", "ACCURACY", "F1", "GATE", "DATA"], rows)


def version_details(v: VersionSummary) -> str:
    """Everything about one version, most useful first."""
    measured = {"evaluation": "held-out, by the gate", "training": "training run, not evaluated"}
    lines = [
        f"{v.name} version {v.version}   {v.model_uri}",
        f"  aliases:         {', '.join('@' + a for a in v.aliases) or MISSING}",
        f"  created:         {v.created} UTC",
        f"  status:          {v.status}",
        f"  gate:            {v.gate_decision or 'not evaluated'}",
        *[f"    - {reason}" for reason in v.gate_reasons],
        f"  accuracy:        {number(v.accuracy)}",
        f"  f1_score:        {number(v.f1_score)}" + (f"   ({measured[v.metrics_from]})" if v.metrics_from else ""),
        f"  data source:     {v.data_source or MISSING}",
        f"  training run:    {v.run_id or MISSING}",
        f"  evaluation run:  {v.evaluation_run_id or MISSING}",
        f"  source:          {v.source}",
    ]
    if v.description:
        lines.append(f"  description:     {flat(v.description)}")
    if v.training_metrics:
        lines.append("  training metrics:")
        lines += [f"    {key:<14} {value:.4f}" for key, value in sorted(v.training_metrics.items())]
    lines += serving_facts(v.tags)
    other = {k: val for k, val in sorted(v.tags.items()) if k not in Tag.VERSION_FACTS | Tag.SERVING_FACTS}
    other = {k: val for k, val in other.items() if not k.startswith(Tag.SHADOW_SOURCE_PREFIX)}
    if other:
        lines.append("  tags:")
        lines += [f"    {key:<14} {flat(value)}" for key, value in other.items()]
    return "\n".join(lines)


def serving_facts(tags: dict[str, str]) -> list[str]:
    """What serving proxies found: the shadow evidence summed over them, and how a canary rollout ended."""
    lines = []
    if tags.get(Tag.SHADOW_ROWS):
        sources = sum(1 for key in tags if key.startswith(Tag.SHADOW_SOURCE_PREFIX))
        lines.append(
            f"  shadow:          {tags[Tag.SHADOW_ROWS]} rows against version {tags.get(Tag.SHADOW_AGAINST, MISSING)}"
            f" ({sources} proxy records): agreement {tags.get(Tag.SHADOW_AGREEMENT) or MISSING},"
            f" error rate {tags.get(Tag.SHADOW_ERROR_RATE) or MISSING}, p99 {tags.get(Tag.SHADOW_P99_MS) or MISSING} ms"
        )
    if tags.get(Tag.ROLLOUT_OUTCOME):
        by = f" by {tags[Tag.ROLLOUT_BY]}" if tags.get(Tag.ROLLOUT_BY) else ""
        lines.append(f"  rollout:         {tags[Tag.ROLLOUT_OUTCOME]}{by} at {tags.get(Tag.ROLLOUT_AT, MISSING)}")
        if tags.get(Tag.ROLLOUT_EVIDENCE):
            try:
                reason = json.loads(tags[Tag.ROLLOUT_EVIDENCE]).get("reason", "")
            except (ValueError, AttributeError):
                reason = tags[Tag.ROLLOUT_EVIDENCE]
            lines.append(f"    - {flat(str(reason))}")
    return lines


def move_dict(move: AliasMove) -> dict:
    return {**move.as_dict(), "at": utc_time(move.at_ms)}


def history_table(moves: list[AliasMove]) -> str:
    rows = [
        [
            utc_time(m.at_ms),
            m.from_version or MISSING,
            m.to_version,
            m.how,
            m.by,
            flat(m.reason, REASON_WIDTH) or MISSING,
        ]
        for m in moves
    ]
    return table(["WHEN (UTC)", "FROM", "TO", "HOW", "BY", "REASON"], rows)


def as_json(value) -> str:
    return json.dumps(value, indent=2, sort_keys=True)


def webhooks_table(webhooks) -> str:
    rows = [[w.id, w.name, w.status, ",".join(w.events), w.url, w.created] for w in webhooks]
    return table(["ID", "NAME", "STATUS", "EVENTS", "URL", "CREATED (UTC)"], rows)
