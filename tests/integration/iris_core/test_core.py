"""The shared core's view of a real child process (the rest of the core: ``tests/unit/iris_core/test_core.py``)."""

import os
import time


def test_a_process_is_running_until_it_ends_and_a_zombie_is_not():
    import subprocess
    import sys

    from iris_core.processes import is_running

    assert is_running(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while is_running(child.pid) and time.monotonic() < deadline:  # ended, not reaped: a zombie
        time.sleep(0.05)
    assert not is_running(child.pid) and child.returncode is None
    child.wait()
    assert not is_running(child.pid)
