"""How a batch job shows its progress: log lines where nobody watches, a bar at a terminal (the command line itself is tested in ``tests/integration/steps/test_batch_command_line.py``)."""


def test_progress_log_lines_come_every_ten_seconds_and_none_for_a_short_job(caplog):
    import logging

    from steps.batch.progress import LogLines

    now = [0.0]
    meter = LogLines("scoring", clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="steps.batch.progress"):
        for second in range(1, 26):
            now[0] = float(second)
            meter.update(second / 50, f"{second * 1000:,} rows")
    assert [record.getMessage() for record in caplog.records] == [
        "scoring: 20% (10,000 rows, 10.0 s, about 40 s left)",
        "scoring: 40% (20,000 rows, 20.0 s, about 30 s left)",
    ]


def test_where_nobody_watches_progress_is_log_lines_and_at_a_terminal_a_bar():
    """What the job's stderr is decides: a file or a pipe gets the log lines above, a terminal the bar."""
    import io

    from steps.batch.progress import Bar, LogLines, progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    closed = io.StringIO()
    closed.close()
    assert isinstance(progress("scoring", io.StringIO()), LogLines)
    assert isinstance(progress("scoring", closed), LogLines)
    assert isinstance(progress("scoring", Terminal()), Bar)
