"""The capture's options of ``python -m serving``, stacked on the command as one decorator.

Their defaults are ``serving.config.ServingConfig``'s, declared there once.
"""

import click

from iris_core.capture import REPLICA_RULE
from serving.config import ServingConfig as C

_OPTIONS = (
    click.option(
        "--capture-uri",
        metavar="URI",
        envvar="SERVING_CAPTURE_URI",
        show_envvar=True,
        help="Capture every answered row and every label (this turns POST /feedback on) as Parquet files in an "
        "artifact location: mlflow-artifacts:/<experiment id>/capture on a tracking server started with "
        "--serve-artifacts, s3://..., gs://..., or a local directory. Off by default.",
    ),
    click.option(
        "--capture-replica",
        metavar="ID",
        envvar="SERVING_CAPTURE_REPLICA",
        show_envvar=True,
        help=f"This proxy's name in the files it writes ({REPLICA_RULE}); the host name by default.",
    ),
    click.option(
        "--capture-spool",
        metavar="DIR",
        default=C.capture_spool,
        show_default=True,
        envvar="SERVING_CAPTURE_SPOOL",
        show_envvar=True,
        help="Local directory where closed files wait for the store (and labels, synced, for their file to close); "
        "a restart with the same spool and replica uploads what a crash left there.",
    ),
    click.option(
        "--capture-spool-bytes",
        type=click.IntRange(min=1),
        default=C.capture_spool_bytes,
        show_default=True,
        help="At most this much waits in the spool; past it rows are dropped (counted) and labels refused (503).",
    ),
    click.option(
        "--capture-file-rows",
        type=click.IntRange(min=1),
        default=C.capture_file_rows,
        show_default=True,
        help="A file closes (and goes to the store) at this many rows ...",
    ),
    click.option(
        "--capture-file-seconds",
        type=click.FloatRange(min=0, min_open=True),
        default=C.capture_file_seconds,
        show_default=True,
        help="... or this many seconds after it opened, or at the end of its hour.",
    ),
)


def capture_options(function):
    for option in reversed(_OPTIONS):
        function = option(function)
    return function
