"""Spark's own SIGINT handler, on its own: a session of this module's, not the one ``test_spark_engine`` shares."""

import pytest

pytestmark = pytest.mark.slow


def test_a_stopped_spark_session_gives_ctrl_c_back_to_the_handler_that_was_there():
    """SparkContext sets a SIGINT handler of its own; left behind, Ctrl-C after the job fails inside it."""
    import signal

    from steps.batch.spark_engine import spark_session

    def ours(signum, frame):
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGINT, ours)
    try:
        with spark_session("local[1]", chunk_size=1000):
            assert signal.getsignal(signal.SIGINT) is not ours, "Spark's own handler while it runs"
        assert signal.getsignal(signal.SIGINT) is ours
    finally:
        signal.signal(signal.SIGINT, before)
