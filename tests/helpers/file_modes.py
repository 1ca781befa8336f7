"""A file's permission bits, for the checks that what holds requests' data is its owner's alone."""

import os
import stat


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)
