# Which ROS 2 distribution this checkout runs on, and where its venv, build and install live;
# sourced by scripts/env.sh and scripts/setup.sh, and printed for the Makefile
# (`bash scripts/distro.sh`). One checkout holds several distributions side by side:
#
#   ROS        where it comes from              venv           build, install
#   kilted     PyPI wheels (the default)         .venv          build, install
#   jazzy      PyPI wheels                      .venv-jazzy    build-jazzy, install-jazzy
#   <distro>   a sourced /opt/ros/<distro>      .venv-<distro>-system  build-<distro>-system, ...
#
# The distribution is OFT_ROS if set (`make ... ROS=jazzy` exports it), else the sourced
# system ROS 2's ROS_DISTRO, else kilted.

OFT_WHEEL_DISTROS="kilted jazzy"
if [ -n "${ROS_DISTRO:-}" ]; then
    # A system ROS 2 is sourced: its setup.bash sets ROS_DISTRO (the wheels never do).
    OFT_ROS="${OFT_ROS:-$ROS_DISTRO}"
    if [ "$OFT_ROS" != "$ROS_DISTRO" ]; then
        echo "ROS=$OFT_ROS, but the sourced ROS 2 is $ROS_DISTRO: use ROS=$ROS_DISTRO, or a" \
            "shell without /opt/ros/*/setup.bash sourced for the $OFT_ROS wheels" >&2
        return 1 2>/dev/null || exit 1
    fi
    OFT_SUFFIX="-$OFT_ROS-system"
else
    OFT_ROS="${OFT_ROS:-kilted}"
    case " $OFT_WHEEL_DISTROS " in
    *" $OFT_ROS "*) ;;
    *)
        echo "ROS=$OFT_ROS: PyPI has ROS 2 wheels for $OFT_WHEEL_DISTROS only; for another" \
            "distribution source its /opt/ros/$OFT_ROS/setup.bash first" >&2
        return 1 2>/dev/null || exit 1
        ;;
    esac
    if [ "$OFT_ROS" = kilted ]; then OFT_SUFFIX=""; else OFT_SUFFIX="-$OFT_ROS"; fi
fi
OFT_VENV=".venv$OFT_SUFFIX"
OFT_BUILD="build$OFT_SUFFIX"
OFT_INSTALL="install$OFT_SUFFIX"
export OFT_ROS OFT_VENV OFT_BUILD OFT_INSTALL
unset OFT_SUFFIX

# Run as a script (the Makefile): print the layout as make variable assignments.
if [ "${BASH_SOURCE[0]:-$0}" = "$0" ]; then
    echo "OFT_ROS=$OFT_ROS OFT_VENV=$OFT_VENV OFT_BUILD=$OFT_BUILD OFT_INSTALL=$OFT_INSTALL"
fi
