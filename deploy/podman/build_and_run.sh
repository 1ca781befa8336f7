#!/usr/bin/env bash
# Build the serving and pipeline images with podman and run them against a tracking server,
# on a machine without Docker or an image registry. From the repository root:
#
#   deploy/podman/build_and_run.sh base      # a Python 3.11 base image from Debian's packages (mmdebstrap)
#   deploy/podman/build_and_run.sh build     # the base if missing, then iris-serving and iris-pipeline
#   MLFLOW_TRACKING_URI=http://127.0.0.1:5000 SERVING_API_TOKEN=... deploy/podman/build_and_run.sh serve
#   deploy/podman/build_and_run.sh stop      # podman stop; exits with the container's exit code
#   MLFLOW_TRACKING_URI=http://127.0.0.1:5000 deploy/podman/build_and_run.sh cycle
#
# Each podman command is printed before it runs. Settings, from the environment:
#   BASE_IMAGE       the images' base (default localhost/bookworm-py:latest, made by `base`;
#                    python:3.11-slim, the Dockerfiles' own default, where a registry is reachable)
#   CA_BUNDLE        the CA bundle pip trusts during the build, mounted read-only for it and never
#                    copied into an image (default /etc/ssl/certs/ca-certificates.crt when it exists)
#   SERVING_IMAGE, PIPELINE_IMAGE   the tags (default localhost/iris-serving:latest, localhost/iris-pipeline:latest)
#   NAME             the serving container's name (default iris-serving)
#   PORT             where the proxy listens, on 127.0.0.1 of the host network (default 8000)
#   LOGS_DIR         a host directory for the prediction and feedback logs (serve writes
#                    LOGS_DIR/NAME/, cycle reads all of LOGS_DIR); podman chowns it to the images' user
#   PODMAN           the podman command (default: podman --runtime runc --cgroup-manager cgroupfs,
#                    for hosts where crun and systemd cgroups do not work)
#   PODMAN_NOFILE, PODMAN_NPROC     the containers' limits (default: this shell's open-files limit, 4096 processes);
#                    rootful podman otherwise asks for the kernel's maximum, refused without CAP_SYS_RESOURCE
set -euo pipefail
cd "$(dirname "$0")/../.."

read -r -a PODMAN <<<"${PODMAN:-podman --runtime runc --cgroup-manager cgroupfs}"
BASE_IMAGE=${BASE_IMAGE:-localhost/bookworm-py:latest}
LOCAL_BASE=localhost/bookworm-py:latest
SERVING_IMAGE=${SERVING_IMAGE:-localhost/iris-serving:latest}
PIPELINE_IMAGE=${PIPELINE_IMAGE:-localhost/iris-pipeline:latest}
NAME=${NAME:-iris-serving}
PORT=${PORT:-8000}
START_TIMEOUT=${START_TIMEOUT:-240}
LIMITS=(--ulimit "nofile=${PODMAN_NOFILE:-$(ulimit -Hn)}:${PODMAN_NOFILE:-$(ulimit -Hn)}"
        --ulimit "nproc=${PODMAN_NPROC:-4096}:${PODMAN_NPROC:-4096}")
LOGS_MOUNT=/var/lib/iris/logs  # where deploy/k8s mounts the logs volume, and the pipeline image's command reads
IMAGE_USER=10001              # the `app` user both Dockerfiles create

run() { echo "+ $*" >&2; "$@"; }
podman_() { run "${PODMAN[@]}" "$@"; }
die() { echo "error: $*" >&2; exit 2; }
need() { [[ -n "${!1:-}" ]] || die "set $1"; }

base() {
    if "${PODMAN[@]}" image exists "$LOCAL_BASE"; then
        echo "$LOCAL_BASE exists (podman rmi it to build it again)" >&2
        return
    fi
    command -v mmdebstrap >/dev/null || die "mmdebstrap not found (apt-get install -y mmdebstrap)"
    local tmp status=0
    tmp=$(mktemp -d)
    run mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$tmp/base.tar" && podman_ import "$tmp/base.tar" "$LOCAL_BASE" >/dev/null || status=$?
    rm -rf "$tmp"
    return "$status"
}

build() {
    [[ "$BASE_IMAGE" != "$LOCAL_BASE" ]] || base
    local cert=() bundle=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
    if [[ -f "$bundle" ]]; then
        cert=(--volume "$bundle:/etc/ssl/certs/ca-certificates.crt:ro" --build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt)
    fi
    # Docker's image format keeps the HEALTHCHECK (OCI's has none). The two Dockerfiles begin with
    # the same steps, so the second build takes the pip install layer from the first.
    podman_ build --format docker --build-arg "BASE_IMAGE=$BASE_IMAGE" "${cert[@]}" \
        -f deploy/Dockerfile -t "$SERVING_IMAGE" .
    podman_ build --format docker --build-arg "BASE_IMAGE=$BASE_IMAGE" "${cert[@]}" \
        -f deploy/Dockerfile.pipeline -t "$PIPELINE_IMAGE" .
}

logs_dir() {  # LOGS_DIR as an absolute path, made if missing
    mkdir -p "$LOGS_DIR"
    cd "$LOGS_DIR" && pwd
}

serve() {
    need MLFLOW_TRACKING_URI
    need SERVING_API_TOKEN
    local logs=()
    if [[ -n "${LOGS_DIR:-}" ]]; then  # :U, podman makes the directory the images' user's
        logs=(--volume "$(logs_dir):$LOGS_MOUNT:U"
              --env "SERVING_PREDICTION_LOG=$LOGS_MOUNT/$NAME/predictions.jsonl"
              --env "SERVING_FEEDBACK_LOG=$LOGS_MOUNT/$NAME/feedback.jsonl")
    fi
    # The host's network, so the proxy reaches a tracking server on the host's loopback; it
    # listens on 127.0.0.1 only. The token and the tracking URI pass by name from this environment.
    podman_ run --detach --name "$NAME" --network host --user "$IMAGE_USER" "${LIMITS[@]}" \
        --env MLFLOW_TRACKING_URI --env SERVING_API_TOKEN \
        --env MLFLOW_TRACKING_USERNAME --env MLFLOW_TRACKING_PASSWORD \
        --env SERVING_HOST=127.0.0.1 --env "SERVING_PORT=$PORT" "${logs[@]}" \
        "$SERVING_IMAGE" >/dev/null
    local deadline=$((SECONDS + START_TIMEOUT))
    until python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$PORT/ready', timeout=5)" 2>/dev/null; do
        if [[ "$("${PODMAN[@]}" inspect --format '{{.State.Running}}' "$NAME")" != true ]] || ((SECONDS > deadline)); then
            "${PODMAN[@]}" logs --tail 20 "$NAME" >&2 || true
            die "$NAME did not become ready on http://127.0.0.1:$PORT/ready"
        fi
        sleep 1
    done
    echo "$NAME is ready: http://127.0.0.1:$PORT (POST /predict with 'Authorization: Bearer \$SERVING_API_TOKEN')"
}

stop() {
    # SIGTERM: the proxy stops accepting, lets requests in flight finish (up to its --timeout + 5 s), exits 0.
    podman_ stop --time 60 "$NAME" >/dev/null
    local code
    code=$("${PODMAN[@]}" inspect --format '{{.State.ExitCode}}' "$NAME")
    "${PODMAN[@]}" rm "$NAME" >/dev/null 2>&1
    echo "$NAME exited with code $code"
    return "$code"
}

cycle() {
    need MLFLOW_TRACKING_URI
    local logs=()
    [[ -z "${LOGS_DIR:-}" ]] || logs=(--volume "$(logs_dir):$LOGS_MOUNT:ro")
    # The image's command: monitor every replica's logs under $LOGS_MOUNT; on drift or a
    # performance drop, retrain through the gate. Its exit code is the cycle's.
    podman_ run --rm --network host --user "$IMAGE_USER" "${LIMITS[@]}" \
        --env MLFLOW_TRACKING_URI --env MLFLOW_TRACKING_USERNAME --env MLFLOW_TRACKING_PASSWORD \
        "${logs[@]}" "$PIPELINE_IMAGE"
}

case "${1:-}" in
    base | build | serve | stop | cycle) "$1" ;;
    *) die "usage: $0 base|build|serve|stop|cycle (settings in the environment: see the top of this file)" ;;
esac
