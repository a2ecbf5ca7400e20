#!/usr/bin/env bash
# Run a command so that no DDS packet can leave this machine.
#   scripts/isolated.sh python -m pytest
# As root (CI, these machines) the command runs in a fresh network namespace that has only the
# loopback interface. Otherwise it runs as is, still confined by scripts/env.sh (localhost
# discovery, loopback-only Fast DDS profile). The tests' conftest.py re-checks this.
set -euo pipefail
if [ "$(id -u)" = 0 ] && [ -z "${OFT_PRIVATE_NETNS:-}" ] && unshare --net true 2>/dev/null; then
    exec unshare --net -- env OFT_PRIVATE_NETNS=1 bash -c 'ip link set lo up && exec "$@"' _ "$@"
fi
exec "$@"
