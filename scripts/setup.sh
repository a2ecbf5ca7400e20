#!/usr/bin/env bash
# Create or update the venv of one ROS 2 distribution (scripts/distro.sh: .venv for Kilted,
# .venv-jazzy for Jazzy) from requirements.txt and requirements/ros-<distro>.txt, the one place
# each set of versions is pinned. Run by `make setup [ROS=jazzy]`, which every other target
# depends on; make only calls it when a pin or this script changed, so a second run with
# nothing changed is instant.
#
# Without a sourced ROS 2, the venv gets the distribution's PyPI wheels and their CMake exports
# are patched so colcon can build oft_msgs. With a system ROS 2 sourced (ROS_DISTRO set), the
# wheels are skipped and the system's rclpy/colcon are used (a venv with system site packages).
# A CUDA build of torch already present in the base interpreter (a GPU machine) is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=distro.sh
. scripts/distro.sh

PYTHON="${PYTHON:-python3}"
VENV="$OFT_VENV"
reqs=$(mktemp)
trap 'rm -f "$reqs"' EXIT

venv_flags=()
cp requirements.txt "$reqs"
if [ -n "${ROS_DISTRO:-}" ]; then
    echo "setup: using the sourced ROS 2 ${ROS_DISTRO}; skipping the ROS wheels"
    venv_flags+=(--system-site-packages)
    # Its message packages are C extensions built against the system's numpy: a numpy 2 in the
    # venv would shadow a 1.x there and they would no longer import.
    system_numpy=$("$PYTHON" -c 'import numpy; print(numpy.__version__)' 2>/dev/null || true)
    if [ "${system_numpy%%.*}" = 1 ]; then
        echo "setup: keeping the system's numpy $system_numpy (requirements/system-ros-numpy1.txt)"
        grep -v -e '^numpy==' -e '^opencv-python-headless==' requirements.txt > "$reqs"
        cat requirements/system-ros-numpy1.txt >> "$reqs"
        echo "numpy==$system_numpy" >> "$reqs"
    fi
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "setup: $("$PYTHON" --version) is too old for the model stack (transformers 5 needs" \
            "Python >= 3.11); what runs on Humble: docs/real_robot.md" >&2
        exit 1
    fi
else
    echo "setup: ROS 2 $OFT_ROS from PyPI wheels (requirements/ros-$OFT_ROS.txt) into $VENV"
    cat "requirements/ros-$OFT_ROS.txt" >> "$reqs"
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
