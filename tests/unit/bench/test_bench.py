"""The benchmarks as a reader meets them: each goal says [met] or [missed] (each runs with ``python -m bench.<name>``:
``tests/integration/bench/test_bench.py``).

The figures themselves are measured on a quiet machine, never here.
"""

import re

from bench.goals import Goal, report
from tests.helpers.bench_scripts import SCRIPTS
from tests.helpers.readme import pages
from tests.helpers.tracking import REPO


def test_the_scripts_are_found():
    assert {"pipeline_overhead", "rollout_benchmark", "serving_benchmark"} <= set(SCRIPTS)


def test_the_readme_and_the_manual_start_every_benchmark_as_a_module():
    for page in pages():
        assert not re.search(r"python3? bench/", page.read_text()), page
    benchmarks = (REPO / "docs" / "benchmarks.md").read_text()
    assert {f"bench.{name}" for name in ("pipeline_overhead", "rollout_benchmark", "serving_benchmark")} <= set(
        re.findall(r"python -m (bench\.\w+)", benchmarks)
    )


def test_a_goal_line_says_met_or_missed_and_shows_the_figure():
    lines = report([Goal("rollback <= 2.5 s", True, "1.06 s"), Goal("promote <= 8.5 s", False, "12.17 s")]).splitlines()
    assert lines == ["goals:", "  [met]    rollback <= 2.5 s: 1.06 s", "  [missed] promote <= 8.5 s: 12.17 s"]


def test_the_rollout_benchmark_marks_a_missed_goal_as_missed():
    from bench.rollout_benchmark import goals

    rows = [("promote to a cold version (1 -> 2)", 12.17), ("rollback to the warm version (2 -> 1)", 1.06)]
    verdicts = [(g.text.split(" <=")[0], g.met) for g in goals(rows, failed=0, poll_interval=2.0, start_up=6.5)]
    assert verdicts == [
        ("promote to cold", False),
        ("rollback to warm", True),
        ("no failed request during the moves", True),
    ]


def test_the_webhook_part_marks_a_warm_switch_at_or_over_half_a_second_as_missed():
    from bench.rollout_benchmark import webhook_report

    def rows(warm: float):
        return [("promote to a cold version (1 -> 2)", 5.0), ("rollback to the warm version (2 -> 1)", warm)]

    failed = {"webhooks": 0, "polling": 0}
    met = webhook_report(rows(0.12), rows(1.9), failed, deliveries=2, poll_interval=2.0)[-1]
    missed = webhook_report(rows(0.5), rows(1.9), failed, deliveries=2, poll_interval=2.0)[-1]
    assert "[met]    warm switch with webhooks < 0.5 s: worst 0.12 s" in met
    assert "[missed] warm switch with webhooks < 0.5 s: worst 0.50 s" in missed


def test_the_monitoring_benchmark_times_the_per_request_hook_with_and_without_the_log(tmp_path):
    from bench.monitoring_overhead import recorder_costs

    costs = recorder_costs(tmp_path, calls=200)

    assert set(costs) == {"metrics", "metrics+log", "log writer thread, per row"}
    assert all(cost > 0 for cost in costs.values())
    assert (tmp_path / "micro.jsonl").read_text().count("\n") == 200
