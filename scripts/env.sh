# Environment of the OFT ALOHA workspace; every make target sources this file.
#   source scripts/env.sh            # ROS 2 Kilted wheels (.venv, install/)
#   source scripts/env.sh jazzy      # ROS 2 Jazzy wheels (.venv-jazzy, install-jazzy/)
# With a system ROS 2 sourced first (/opt/ros/<distro>/setup.bash), that one is used. It
# activates the distribution's venv (scripts/distro.sh), overlays its colcon workspace, and
# confines DDS to this machine (loopback + shared memory). Safe to source more than once.

OFT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
export OFT_ROOT
if [ -n "${1:-}" ]; then OFT_ROS="$1"; fi
# shellcheck source=distro.sh
. "$OFT_ROOT/scripts/distro.sh" || return 1

if [ -f "$OFT_ROOT/$OFT_VENV/bin/activate" ]; then
    # shellcheck disable=SC1091
    VIRTUAL_ENV_DISABLE_PROMPT=1 . "$OFT_ROOT/$OFT_VENV/bin/activate"
fi

if [ -z "${ROS_DISTRO:-}" ] && [ -n "${VIRTUAL_ENV:-}" ]; then
    # The wheels lay out a ROS prefix inside the venv itself.
    export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
    export CMAKE_PREFIX_PATH="$VIRTUAL_ENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
fi

if [ -f "$OFT_ROOT/$OFT_INSTALL/local_setup.bash" ] && [ -n "${BASH_VERSION:-}" ]; then
    # shellcheck disable=SC1091
    . "$OFT_ROOT/$OFT_INSTALL/local_setup.bash"
elif [ -f "$OFT_ROOT/$OFT_INSTALL/local_setup.sh" ]; then
    # shellcheck disable=SC1091
    COLCON_CURRENT_PREFIX="$OFT_ROOT/$OFT_INSTALL" . "$OFT_ROOT/$OFT_INSTALL/local_setup.sh"
fi

# The packages' console scripts (run_graph, policy_node, chunk_executor, eval_sim, ...) by name,
# as `ros2 run <package> <name>` would find them; appended, so system commands keep theirs
# (ImageMagick's `convert`: use `python -m oft_training.convert`).
for _scripts in "$OFT_ROOT/$OFT_INSTALL"/*/lib/*/; do
    case ":$PATH:" in *":${_scripts%/}:"*) ;; *) [ -d "$_scripts" ] && PATH="$PATH:${_scripts%/}" ;; esac
done
unset _scripts
export PATH

# DDS never leaves this machine: discovery on localhost only, and transports restricted to
# shared memory + UDPv4 on 127.0.0.1 (src/aloha_bringup/config/fastdds_loopback.xml).
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export FASTDDS_DEFAULT_PROFILES_FILE="$OFT_ROOT/src/aloha_bringup/config/fastdds_loopback.xml"
# Headless off-screen rendering for the MuJoCo cameras.
export MUJOCO_GL="${MUJOCO_GL:-egl}"
export PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-$MUJOCO_GL}"
