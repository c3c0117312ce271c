#!/usr/bin/env bash
# Creates the project's virtual environment with Python 3.10 and installs the exact
# pins from requirements.txt plus the package (editable).
# Interpreter search order: $PYTHON, python3.10 on PATH, pyenv's newest 3.10.
#
#   scripts/make_venv.sh [VENV]        build VENV from scratch (CPU; `make venv`)
#   scripts/make_venv.sh VENV --gpu    add JAX's CUDA 12 plugin to a built VENV
#                                      (`make venv-gpu`)
set -euo pipefail
venv="${1:-.venv}"
mode="${2:-}"

# The CUDA plugin must match jaxlib exactly, so its version is read from the
# pins rather than written twice. `-c requirements.txt` keeps every CPU pin
# (numpy, ml_dtypes, ...) where it is while the plugin's wheels are resolved.
add_gpu() {
  if [[ ! -f "$venv/.installed" ]]; then
    echo "error: $venv is not built; run 'make venv' first" >&2
    exit 1
  fi
  local jax_version
  jax_version="$(sed -n 's/^jax==\([^ ]*\).*/\1/p' requirements.txt)"
  if [[ -z "$jax_version" ]]; then
    echo "error: no 'jax==' pin in requirements.txt" >&2
    exit 1
  fi
  echo "Adding jax[cuda12]==$jax_version to $venv (CUDA 12 wheels, about 3 GB)"
  "$venv/bin/python" -m pip install -q -c requirements.txt "jax[cuda12]==$jax_version"
  "$venv/bin/python" -m pip check
  touch "$venv/.installed-gpu"
}

case "$mode" in
  --gpu) add_gpu; exit 0 ;;
  '') ;;
  *) echo "error: unknown option $mode (expected --gpu)" >&2; exit 2 ;;
esac

find_python() {
  if [[ -n "${PYTHON:-}" ]]; then echo "$PYTHON"; return; fi
  if command -v python3.10 >/dev/null 2>&1 && python3.10 -c '' >/dev/null 2>&1; then
    command -v python3.10; return
  fi
  if command -v pyenv >/dev/null 2>&1; then
    local root; root="$(pyenv root)"
    local cand
    cand="$(ls -d "$root"/versions/3.10.* 2>/dev/null | sort -V | tail -n 1 || true)"
    if [[ -n "$cand" && -x "$cand/bin/python" ]]; then echo "$cand/bin/python"; return; fi
  fi
  return 1
}

if ! py="$(find_python)"; then
  echo "error: Python 3.10 not found (dm-launchpad has wheels for Python <= 3.10 only)." >&2
  echo "  Install it (e.g. 'pyenv install 3.10', 'uv python install 3.10', deadsnakes" >&2
  echo "  'apt install python3.10-venv', or conda) or point to it: make test PYTHON=/path/to/python3.10" >&2
  exit 1
fi
ver="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo unknown)"
if [[ "$ver" != "3.10" ]]; then
  echo "error: $py is Python $ver; this project needs Python 3.10 (dm-launchpad wheels)." >&2
  exit 1
fi

echo "Creating $venv with $py (Python $ver)"
rm -rf "$venv"
"$py" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -r requirements.txt
"$venv/bin/python" -m pip install -q --no-deps -e .
"$venv/bin/python" -m pip check
touch "$venv/.installed"
