#!/usr/bin/env bash
# One-shot check of an accelerator host (e.g. one H200 and 16 cores), at most
# 8 minutes end to end. From the repository root:
#
#   bash bench/device_check.sh [OUT_DIR]        (default: $OUT, else bench/out)
#
# Steps, each under `timeout` and within one overall deadline:
#   venv         `make venv-gpu` where nvidia-smi sees a GPU, else `make venv`
#                (no-ops when built; a TPU VM needs jax[tpu] first, README.md)
#   devices      jax.devices() and nvidia-smi
#   learner      bench/bench_feed.py --mode learner: updates/s at humanoid
#                sizes per K (1, 8, 32) and replay backend (~2 min)
#   feed         bench/bench_feed.py --mode feed: feed capacity per backend
#                (~1 min)
#   distributed  a ~3-minute humanoid-run (acme preset, replay_backend=device,
#                cores-2 actors) through bench/bench_distributed.py; its
#                measured window (<= 120 s) shrinks to fit the deadline
# A host that cannot build the venv (no PyPI, no Python 3.10: e.g. an image
# with its own JAX) gets instead
#   device_replay  bench/bench_device_replay.py with the host's python3 (pure
#                JAX: learner updates/s per K and feed capacity of the device
#                replay; needs only jax, flax, optax, chex and psutil).
# Every step runs even when an earlier one failed; all results, and the end of
# the log of any step that failed or ran out of time, are merged into
# OUT_DIR/device_check.json. DEVICE_CHECK_SECONDS changes the 480 s budget.
set -uo pipefail  # no -e: a failed step is recorded, not fatal

cd "$(dirname "$0")/.."
out="${1:-${OUT:-bench/out}}"
mkdir -p "$out" && out="$(cd "$out" && pwd)"
export MUJOCO_GL=egl PYTHONUNBUFFERED=1
PY=.venv/bin/python
budget="${DEVICE_CHECK_SECONDS:-480}"
end=$((SECONDS + budget - 20))  # the last 20 s are for the merge
KILL_AFTER=20  # after SIGTERM, for the distributed run to stop its nodes
# Reverb's writers print this line thousands of times a minute at high insert
# rates (harmless here); it would bury a step's real error in its log.
NOISE='pending items is alarmingly high'

# step NAME MAX_S CMD...: runs CMD for at most MAX_S seconds (fewer when the
# deadline is nearer), teeing its output to OUT/NAME.log and its status to
# OUT/NAME.rc (124: timed out; 'skipped': no time was left for it).
step() {
  local name="$1" max="$2"
  shift 2
  local left=$((end - SECONDS - KILL_AFTER))
  ((left < max)) && max=$left
  if ((max < 10)); then
    echo "skipped: the ${budget} s budget was spent" | tee "$out/$name.log"
    echo skipped >"$out/$name.rc"
    return
  fi
  echo "== $name (at most ${max} s): $*"
  timeout -k "$KILL_AFTER" "$max" "$@" 2>&1 | grep --line-buffered -v "$NOISE" |
    tee "$out/$name.log"
  echo "${PIPESTATUS[0]}" >"$out/$name.rc"
}

rm -rf "$out"/{venv,devices,learner,feed,distributed,device_replay}.{log,rc,json} \
  "$out/distributed"
if nvidia-smi -L >/dev/null 2>&1; then
  step venv 240 make venv-gpu
else
  step venv 240 make venv
fi

if [[ "$(cat "$out/venv.rc")" != 0 ]]; then
  # No project venv: measure the device replay alone with the host's JAX.
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  step devices 60 bash -c "python3 -c 'import jax; print(jax.__version__, \
    jax.devices())'; nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv 2>/dev/null || true"
  step device_replay 300 python3 bench/bench_device_replay.py --seconds 5 \
    --windows 2 --json "$out/device_replay.json"
  PY=/nonexistent  # the steps below need the venv: they record their failure
fi

if [[ -x "$PY" ]]; then
  step devices 60 bash -c "$PY -c 'import jax; print(jax.devices())'; \
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv \
    2>/dev/null || true"
fi

# bench_feed's --seconds is per window and per (backend, K), all interleaved:
# 2 windows x 6 x 5 s = 60 s measured here, 2 x 4 x 5 s = 40 s in the feed step.
step learner 180 "$PY" bench/bench_feed.py --mode learner --ks 1,8,32 \
  --backends reverb,device --seconds 5 --windows 2 --json "$out/learner.json"

step feed 100 "$PY" bench/bench_feed.py --mode feed --ks 1,8 \
  --backends reverb,device --seconds 5 --windows 2 --json "$out/feed.json"

# The measured window shrinks to what the deadline leaves after ~90 s of
# start-up (processes, jit, min_replay_size) and shut-down and a 30 s warm-up.
actors=$(($(nproc) - 2))
((actors < 1)) && actors=1
window=$((end - SECONDS - KILL_AFTER - 90 - 30))
((window > 120)) && window=120
if ((window >= 20)); then
  step distributed $((window + 150)) "$PY" bench/bench_distributed.py \
    --domain humanoid --task run --config acme --backend device \
    --num_actors "$actors" --skip-scaling --warmup 30 --seconds "$window" \
    --start-timeout 120 --workdir "$out/distributed" \
    --json "$out/distributed.json"
else
  echo "skipped: the ${budget} s budget left no time for a measured window" |
    tee "$out/distributed.log"
  echo skipped >"$out/distributed.rc"
fi
# Checkpoints and TensorBoard events of the throwaway run are not results.
rm -rf "$out"/distributed/*/run/{checkpoints,tb}

merge_py="$PY"
[[ -x "$merge_py" ]] || merge_py=python3
"$merge_py" - "$out" "$budget" "$SECONDS" <<'EOF'
import json, os, platform, subprocess, sys, time

out, budget, elapsed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def read(name, ext):
  try:
    with open(os.path.join(out, f'{name}.{ext}'), errors='replace') as f:
      return f.read()
  except OSError:
    return None

def git(*args):
  try:
    return subprocess.run(['git', *args], capture_output=True, text=True,
                          timeout=10).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return None

result = dict(host=platform.node(), cpus=os.cpu_count(),
              date=time.strftime('%Y-%m-%dT%H:%M:%S%z'),
              commit=git('rev-parse', 'HEAD'),
              dirty=bool(git('status', '--porcelain', '--untracked-files=no')),
              budget_s=budget, elapsed_s=elapsed)
for name in ('venv', 'devices', 'device_replay', 'learner', 'feed',
             'distributed'):
  rc = (read(name, 'rc') or '').strip()
  if not rc:
    continue  # a step this host's path did not take
  entry = dict(rc=int(rc) if rc.lstrip('-').isdigit() else rc or None)
  log = read(name, 'log') or ''
  if name == 'devices':
    entry['output'] = log.strip()
  raw = read(name, 'json')
  if raw:
    try:
      entry['result'] = json.loads(raw)
    except ValueError as e:
      entry['result_error'] = f'{name}.json: {e}'
  if entry['rc'] != 0:
    entry['error'] = ('timed out; ' if entry['rc'] in (124, 137) else '') + (
        '\n'.join(log.splitlines()[-40:]) or 'no output')
  result[name] = entry
path = os.path.join(out, 'device_check.json')
with open(path, 'w') as f:
  json.dump(result, f, indent=1)
print(path)
print(json.dumps(result, indent=1))
EOF
