#!/usr/bin/env bash
# Prepare one Ray node for hmh jobs, before `ray start`: the system libraries for headless rendering (EGL) and
# hmh's pinned Python dependencies, installed into the node's Python (the image's, which already runs Ray 2.60.0).
# hmh's code is not installed here: every job ships it (runtime_env working_dir), so nodes never hold a stale copy.
# Used by cluster/aws-gpu.yaml (setup_commands) and by the KubeRay pods (ConfigMap hmh-node-setup). Idempotent.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
python=${HMH_NODE_PYTHON:-python}

system_packages=(libegl1 libegl-mesa0 libgl1-mesa-dri libgl1)
missing=()
for pkg in "${system_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

"$python" -m pip install --no-cache-dir -q -r "$here/node-requirements.txt"
"$python" - <<'PY'
import sys

import ray
import torch

problems = []
if sys.version_info[:2] != (3, 11):
    problems.append(f"Python {sys.version.split()[0]} (need 3.11)")
if ray.__version__ != "2.60.0":
    problems.append(f"ray {ray.__version__} (need 2.60.0)")
if torch.__version__.split("+")[0] != "2.14.1":
    problems.append(f"torch {torch.__version__} (need 2.14.1)")
if problems:
    sys.exit("node-setup.sh: this node's Python does not match hmh's pins: " + ", ".join(problems))
print(f"node-setup.sh: ready (Python {sys.version.split()[0]}, ray {ray.__version__}, torch {torch.__version__}, "
      f"CUDA available: {torch.cuda.is_available()})")
PY
