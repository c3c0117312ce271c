#!/usr/bin/env bash
# A multi-host WPO run on a Cloud TPU VM slice (v4-16 and up: several workers).
#
#   launch/multihost/tpu_vm.sh TPU_NAME ZONE [run_local.py flags]
#   e.g. launch/multihost/tpu_vm.sh my-v4-16 us-central2-b --domain=humanoid \
#            --workdir=runs/humanoid-seed0
#
# Every worker needs the repo at ~/wpo-agent (override: WPO_DIR) with its venv
# and JAX's TPU wheel: `make venv && .venv/bin/pip install "jax[tpu]==0.6.2" -c
# requirements.txt` (README, "GPU and TPU hosts"). Each worker reads its id and
# worker 0's address from the TPU metadata server, as jax.distributed does.
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 TPU_NAME ZONE [run_local.py flags]" >&2
  exit 2
fi
TPU=$1 ZONE=$2
shift 2
DIR=${WPO_DIR:-'~/wpo-agent'}
FLAGS=$(printf '%q ' "$@")
read -r -d '' REMOTE <<SCRIPT || true
set -euo pipefail
md() { curl -sf -H 'Metadata-Flavor: Google' \
  "http://metadata.google.internal/computeMetadata/v1/instance/attributes/\$1"; }
ID=\$(md agent-worker-number)
HOSTS=\$(md worker-network-endpoints)           # id:port:ip,id:port:ip,...
COORDINATOR=\$(echo "\$HOSTS" | cut -d, -f1 | cut -d: -f3)
COUNT=\$(echo "\$HOSTS" | tr ',' '\n' | wc -l)
cd $DIR
exec launch/multihost/run_host.sh "\$ID" "\$COUNT" "\$COORDINATOR:8476" $FLAGS
SCRIPT
exec gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all \
    --command="$REMOTE"
