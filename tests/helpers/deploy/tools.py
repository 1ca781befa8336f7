"""The programs the deploy tests run (podman, promtool, prometheus), found or skipped for.

Without them a test skips with the reason and the Debian package to install; under CI
(``CI`` set) it fails instead, because there ``.ci/run`` installs them and they must run.
"""

import os
import shutil

import pytest

# The Debian package of each program.
PACKAGES = {
    "podman": "podman",
    "runc": "runc",
    "mmdebstrap": "mmdebstrap",
    "promtool": "prometheus",
    "prometheus": "prometheus",
}


def require(*programs: str) -> dict[str, str]:
    """The path of each program, or skip (fail under CI) naming the packages that give the missing ones."""
    found = {name: shutil.which(name) for name in programs}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        packages = " ".join(sorted({PACKAGES.get(name, name) for name in missing}))
        reason = f"{', '.join(missing)} not found (apt-get install -y --no-install-recommends {packages})"
        if os.environ.get("CI"):
            pytest.fail(f"deploy tests must run in CI: {reason}", pytrace=False)
        pytest.skip(reason)
    return found
