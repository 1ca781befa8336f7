"""The files that hold requests' data, and the model servers' sockets, are their owner's alone, whatever the umask."""

import os
import subprocess
import sys
import tempfile

from serving.upstreams import servers
from tests.helpers.file_modes import mode


def test_a_model_servers_socket_directory_is_the_users_alone_and_a_dead_proxys_are_swept(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(servers, "_swept", False)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_proxy = tmp_path / f"{servers.SOCKET_PREFIX}{finished.stdout.strip()}-abc"
    live_proxy = tmp_path / f"{servers.SOCKET_PREFIX}{os.getppid()}-def"
    for directory in (dead_proxy, live_proxy):
        directory.mkdir()
        (directory / "uvicorn.sock").touch()
    made = servers.socket_directory()
    assert made.parent == tmp_path and made.name.startswith(f"{servers.SOCKET_PREFIX}{os.getpid()}-")
    assert mode(made) == 0o700 and made.stat().st_uid == os.geteuid()
    assert not dead_proxy.exists() and live_proxy.exists()
