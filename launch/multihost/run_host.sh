#!/usr/bin/env bash
# One host of a multi-host WPO run. Run the same command on every host; the
# hosts' learners form one JAX job whose coordinator is host 0.
#
#   launch/multihost/run_host.sh HOST_ID NUM_HOSTS COORDINATOR_HOST:PORT [run_local.py flags]
#   launch/multihost/run_host.sh [run_local.py flags]     # ids from the environment
#
# e.g. on 10.0.0.2 (host 0) and 10.0.0.3 (host 1), with the repo and `make venv`
# (or `make venv-gpu`) done at the same path on both:
#   launch/multihost/run_host.sh 0 2 10.0.0.2:8476 --domain=humanoid --workdir=runs/h
#   launch/multihost/run_host.sh 1 2 10.0.0.2:8476 --domain=humanoid --workdir=runs/h
#
# Without the three positional arguments: JAX_NUM_PROCESSES and
# JAX_COORDINATOR_ADDRESS must be set, and the host id is taken from
# JAX_PROCESS_ID, else SLURM_PROCID (slurm.sbatch), else JOB_COMPLETION_INDEX
# (kubernetes.yaml). Ctrl-C or SIGTERM on any host stops every host through a
# checkpoint; rerunning the same commands resumes.
set -euo pipefail

if [[ $# -ge 3 && $1 =~ ^[0-9]+$ && $2 =~ ^[0-9]+$ ]]; then
  export JAX_PROCESS_ID=$1 JAX_NUM_PROCESSES=$2 JAX_COORDINATOR_ADDRESS=$3
  shift 3
else
  export JAX_PROCESS_ID=${JAX_PROCESS_ID:-${SLURM_PROCID:-${JOB_COMPLETION_INDEX:-}}}
  for name in JAX_PROCESS_ID JAX_NUM_PROCESSES JAX_COORDINATOR_ADDRESS; do
    if [[ -z ${!name:-} ]]; then
      echo "error: $name is not set; usage: $0 HOST_ID NUM_HOSTS HOST:PORT [flags]" >&2
      exit 2
    fi
  done
fi

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PY=${WPO_PYTHON:-$REPO/.venv/bin/python}
if [[ ! -x $PY ]]; then
  echo "error: $PY not found: run 'make venv' (GPU hosts: 'make venv-gpu') in $REPO first" >&2
  exit 2
fi
export MUJOCO_GL=${MUJOCO_GL:-egl}
# exec: run_local.py receives the signals a scheduler sends to this script.
exec "$PY" "$REPO/launch/run_local.py" "$@"
