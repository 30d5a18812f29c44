#!/usr/bin/env bash
# Create .venv and install hmh with its pinned dependencies; install missing system packages with apt.
# Idempotent: re-running with everything in place only checks and returns.
set -euo pipefail
cd "$(dirname "$0")/.."

SYSTEM_PACKAGES=(libegl1 libegl-mesa0 libgl1-mesa-dri libgl1)  # headless OpenGL (EGL + llvmpipe) for rendering
missing=()
for pkg in "${SYSTEM_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "bootstrap: installing system packages: ${missing[*]}"
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
    echo "bootstrap: hmh needs Python 3.11 (torch 2.14.1 wheels); found $("$PYTHON" --version)" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
    echo "bootstrap: creating .venv with $("$PYTHON" --version)"
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.hmh-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "bootstrap: installing hmh and its pinned dependencies into .venv (first time: several minutes)"
    need_gb=7  # a first install: torch's CUDA build alone is 5.5 GB in the venv (it runs on the CPU too)
    free_gb=$(df -Pk .venv | awk 'NR == 2 {print int($4 / 1048576)}')
    if [ ! -f "$stamp" ] && [ "$free_gb" -lt "$need_gb" ]; then
        echo "bootstrap: warning: $(pwd)/.venv needs about $need_gb GB and its filesystem has $free_gb GB free;" \
             "pip will stop with 'No space left on device' if it runs out" >&2
    fi
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[dev]'
    touch "$stamp"
fi
