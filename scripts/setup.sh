#!/usr/bin/env bash
# Create or update the project's .venv from requirements.txt (the one place versions are pinned).
# Run by `make setup`, which every other target depends on; make only calls it when
# requirements.txt or this script changed, so a second run with nothing changed is instant.
#
# Without a sourced ROS 2, the venv gets ROS 2 Kilted from PyPI wheels (lines tagged `# [ros]`)
# and the wheels' CMake exports are patched so colcon can build oft_msgs. With a system ROS 2
# sourced (ROS_DISTRO set), the tagged lines are skipped and the system's rclpy/colcon are used.
# A CUDA build of torch already present in the base interpreter (a GPU machine) is kept.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV=.venv
reqs=$(mktemp)
trap 'rm -f "$reqs"' EXIT

venv_flags=()
if [ -n "${ROS_DISTRO:-}" ]; then
    echo "setup: using the sourced ROS 2 ${ROS_DISTRO}; skipping the ROS wheels"
    grep -v '# \[ros\]' requirements.txt > "$reqs"
    venv_flags+=(--system-site-packages)
else
    cp requirements.txt "$reqs"
fi

if "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "setup: keeping the interpreter's CUDA torch ($("$PYTHON" -c 'import torch; print(torch.__version__)'))"
    grep -v '^torch==' "$reqs" > "$reqs.tmp" && mv "$reqs.tmp" "$reqs"
    venv_flags+=(--system-site-packages)
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV with $("$PYTHON" --version)"
    "$PYTHON" -m venv "${venv_flags[@]}" "$VENV"
fi

# colcon-core breaks with setuptools >= 80; pin it before anything else pulls a newer one.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "setuptools<80" wheel
"$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off -r "$reqs"

if [ -z "${ROS_DISTRO:-}" ]; then
    "$VENV/bin/python" scripts/fix_cmake_exports.py "$VENV"
fi
echo "setup: done"
