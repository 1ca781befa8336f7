"""Files that hold the requests' data (the prediction and feedback logs, the model servers' logs): owner only.

They are created with mode 0600 whatever the umask. A file that already exists keeps its
owner and group bits, so a group an operator granted on purpose stays, but loses any
access for other users.
"""

import os
import stat
from pathlib import Path
from typing import BinaryIO

PRIVATE_MODE = 0o600


def open_private(path: str | Path, buffering: int = -1) -> BinaryIO:
    """``open(path, "ab", buffering)``, creating the file 0600, and taking other users' access off an existing one."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, PRIVATE_MODE)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & stat.S_IRWXO:
            os.fchmod(fd, mode & ~stat.S_IRWXO)
        return os.fdopen(fd, "ab", buffering=buffering)
    except BaseException:
        os.close(fd)
        raise
