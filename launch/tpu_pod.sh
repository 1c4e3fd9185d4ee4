#!/usr/bin/env bash
# Cloud TPU pod slice: creates the TPU VM if it does not exist, copies this repository to every worker,
# installs genvla_jax[tpu] there (no test extra), and starts the same training command on all workers at once (JAX finds the pod's
# coordinator itself: config.distributed.initialize=always).
#   TPU_NAME=genvla ZONE=us-central2-b ACCELERATOR=v4-32 bash launch/tpu_pod.sh CONFIG WORKDIR [train flags]
# WORKDIR, the RLDS data and data.cache_dir must be paths every worker sees (e.g. a gcsfuse or Filestore
# mount); each worker converts its own copy of the data when the cache is not shared.
# Environment: TPU_NAME, ZONE, ACCELERATOR (required); PROJECT (gcloud's default otherwise),
# RUNTIME (TPU VM image, default tpu-ubuntu2204-base), SPOT=1 (preemptible capacity),
# GENVLA_EXTRA_PIP (default "jax[tpu]==0.10.2", next to the tpu extra), REMOTE_DIR (default genvla_jax).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONFIG="${1:?usage: tpu_pod.sh CONFIG WORKDIR [train flags]}"
WORKDIR="${2:?usage: tpu_pod.sh CONFIG WORKDIR [train flags]}"
shift 2
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}" "${ACCELERATOR:?set ACCELERATOR, e.g. v4-32}"
RUNTIME="${RUNTIME:-tpu-ubuntu2204-base}"
REMOTE_DIR="${REMOTE_DIR:-genvla_jax}"
EXTRA_PIP="${GENVLA_EXTRA_PIP-jax[tpu]==0.10.2}"
gcloud_args=(--zone="$ZONE")
if [ -n "${PROJECT:-}" ]; then gcloud_args+=(--project="$PROJECT"); fi

if ! gcloud compute tpus tpu-vm describe "$TPU_NAME" "${gcloud_args[@]}" >/dev/null 2>&1; then
  create_args=(--accelerator-type="$ACCELERATOR" --version="$RUNTIME")
  if [ "${SPOT:-0}" = 1 ]; then create_args+=(--spot); fi
  gcloud compute tpus tpu-vm create "$TPU_NAME" "${gcloud_args[@]}" "${create_args[@]}"
fi

archive="$(mktemp -d)/genvla_jax.tar.gz"
git -C "$ROOT" archive --format=tar.gz -o "$archive" HEAD  # the committed tree, no venv / workdirs
gcloud compute tpus tpu-vm scp "$archive" "$TPU_NAME:genvla_jax.tar.gz" --worker=all "${gcloud_args[@]}"

# Quote every argument for the remote shell.
train_cmd="$(printf '%q ' .venv/bin/python -m genvla_jax.train --config="$CONFIG" --workdir="$WORKDIR" \
  --config.distributed.initialize=always "$@")"
remote="set -euo pipefail; mkdir -p $(printf '%q' "$REMOTE_DIR"); cd $(printf '%q' "$REMOTE_DIR");
tar xzf ~/genvla_jax.tar.gz; GENVLA_EXTRAS=tpu GENVLA_EXTRA_PIP=$(printf '%q' "$EXTRA_PIP") bash launch/setup_env.sh;
$train_cmd"
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --worker=all "${gcloud_args[@]}" --command="$remote"
