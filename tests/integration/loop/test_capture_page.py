"""docs/feedback.md's "Capture into MLflow's artifact store", run as its page writes it.

In a clone of the project: the page's ``mlflow server --serve-artifacts`` (on a free port
instead of 5000), its ``mlflow run`` training version 1 there, its ``python -m serving``
capturing into ``mlflow-artifacts:/capture`` (on a free port instead of 8000), the traffic
script of "The loop, end to end" with the page's arguments, the proxy stopped with SIGINT
(what Ctrl-C sends), then the page's ``monitor`` and ``cycle`` commands exactly as written:
what they print must be what the page shows, the capture's files where it says they are.
"""

import os
import re
import signal
import subprocess
import sys

import pytest

from iris_core.errors import EXIT_REVIEW
from tests.helpers.readme import commands, comparable, fresh_clone, printed_in_order, promised, section_blocks
from tests.helpers.support import free_port, http_ok, stop_process, wait_until
from tests.helpers.tracking import BIN, REPO, clean_env

pytestmark = pytest.mark.slow

PAGE = REPO / "docs" / "feedback.md"
SECTION = "Capture into MLflow's artifact store"
LOOP = "The loop, end to end"


def lines_of(section: str, language: str) -> list[str]:
    return [line for kind, body in section_blocks(PAGE, section) if kind == language for line in body]


def started(command: str, cwd, env: dict, log) -> subprocess.Popen:
    return subprocess.Popen(
        ["bash", "-c", f"exec {command}"],
        cwd=cwd,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def test_the_capture_section_run_as_written_against_a_tracking_server_prints_what_the_page_shows(tmp_path):
    setup = [line for line in lines_of(SECTION, "bash") if line.strip()]
    [server_line] = [line for line in setup if line.startswith("mlflow server ")]
    [export] = [line for line in setup if line.startswith("export MLFLOW_TRACKING_URI=")]
    [train] = [line for line in setup if line.startswith("mlflow run ")]
    [proxy_line] = [line for line in setup if line.startswith("python -m serving ")]
    assert "--serve-artifacts" in server_line and "--capture-uri mlflow-artifacts:/capture" in proxy_line
    script = "\n".join(lines_of(LOOP, "bash"))
    traffic = re.search(r"cat > /tmp/iris-traffic.py <<'EOF'\n(.*?)\nEOF", script, re.S).group(1)
    shown = {c.text: c for c in commands(PAGE) if c.section == SECTION and c.shown is not None}
    [monitor] = [c for text, c in shown.items() if text.startswith("python -m steps.monitor")]
    [cycle] = [c for text, c in shown.items() if text.startswith("python -m steps.cycle")]

    clone = fresh_clone(tmp_path / "iris-mlops")
    server_port, proxy_port = free_port(), free_port()
    uri = export.split("=", 1)[1].replace(":5000", f":{server_port}")
    env = clean_env({"MLFLOW_TRACKING_URI": uri, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"})
    env.pop("SERVING_API_TOKEN", None)
    script_path = tmp_path / "iris-traffic.py"
    script_path.write_text(traffic.replace("http://127.0.0.1:8000", f"http://127.0.0.1:{proxy_port}"))
    console = lines_of(SECTION, "console")
    page_traffic = [i for i, line in enumerate(console) if line.startswith("$ python /tmp/iris-traffic.py ")]
    assert len(page_traffic) == 2
    processes = []
    try:
        with open(tmp_path / "server.log", "wb") as log:
            processes.append(started(server_line.replace("--port 5000", f"--port {server_port}"), clone, env, log))
        wait_until(lambda: http_ok(f"{uri}/health"), timeout=120, what=f"the tracking server (log in {tmp_path})")
        trained = subprocess.run(["bash", "-c", train], cwd=clone, env=env, capture_output=True, text=True, timeout=600)
        assert trained.returncode == 0 and "@champion -> version 1" in trained.stdout, trained.stderr[-3000:]

        with open(tmp_path / "proxy.log", "wb") as log:
            proxy = started(f"{proxy_line} --port {proxy_port}", clone, env, log)
        processes.append(proxy)
        url = f"http://127.0.0.1:{proxy_port}"
        wait_until(lambda: http_ok(f"{url}/ready"), timeout=240, what=f"the proxy (log in {tmp_path})")
        for i in page_traffic:
            argv = console[i].removeprefix("$ python /tmp/iris-traffic.py ").split()
            sent = subprocess.run(
                [sys.executable, str(script_path), *argv],
                cwd=clone,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert (sent.returncode, sent.stdout.strip()) == (0, console[i + 1]), sent.stderr[-2000:]
        proxy.send_signal(signal.SIGINT)  # Ctrl-C: the open files close into the store before it exits
        proxy.wait(timeout=60)

        stored = sorted(p.relative_to(clone).as_posix() for p in (clone / "mlartifacts" / "capture").rglob("*.parquet"))
        assert [re.sub(r"date=.*", "", p) for p in stored] == [
            "mlartifacts/capture/feedback/model=iris/version=1/",
            "mlartifacts/capture/predictions/model=iris/version=1/",
        ]
        assert all(re.search(r"/date=\d{4}-\d\d-\d\d/hour=\d\d/web-1-\d{16}\.parquet$", p) for p in stored), stored

        for command, code in ((monitor, 1), (cycle, EXIT_REVIEW)):
            ran = subprocess.run(
                ["bash", "-c", command.text], cwd=clone, env=env, capture_output=True, text=True, timeout=600
            )
            failed = f"$ {command.text}\nexit {ran.returncode}\n{ran.stdout[-3000:]}\n{ran.stderr[-3000:]}"
            assert ran.returncode == code, failed
            expected, actual = promised(command), comparable(ran.stdout + "\n" + ran.stderr)
            assert printed_in_order(expected, actual), "\n".join(["the page shows:", *expected, "printed:", *actual])
    finally:
        for process in reversed(processes):
            stop_process(process, timeout=30)
