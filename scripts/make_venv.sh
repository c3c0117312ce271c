#!/usr/bin/env bash
# Creates the project's virtual environment with Python 3.10 and installs the exact
# pins from requirements.txt plus the package (editable).
# Interpreter search order: $PYTHON, python3.10 on PATH, pyenv's newest 3.10.
set -euo pipefail
venv="${1:-.venv}"

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
