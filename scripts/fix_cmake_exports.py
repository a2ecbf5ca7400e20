"""Point the CMake export files of the ROS 2 wheels at this interpreter.

The PyPI wheels of ROS 2 were built in a manylinux container and their installed ``*.cmake``
files hard-code that container's Python include directory and numpy include directory. Any
``colcon build`` of an interface package (rosidl generating Python bindings) then fails to find
``Python.h`` / ``numpy/ndarrayobject.h``. Rewriting those two paths in place is idempotent.
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

import numpy

# The wheel builder's paths, as they appear in the installed export files.
BUILDER_PYTHON_INCLUDE = '/opt/python/cp311-cp311/include/python3.11'
BUILDER_NUMPY_INCLUDE = '/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include'


def fix_exports(prefix: Path) -> list[Path]:
    """Rewrite the builder paths under ``prefix/share``; return the files that changed."""
    replacements = {
        BUILDER_NUMPY_INCLUDE: numpy.get_include(),
        BUILDER_PYTHON_INCLUDE: sysconfig.get_paths()['include'],
    }
    changed = []
    for path in (prefix / 'share').rglob('*.cmake'):
        text = path.read_text(errors='surrogateescape')
        # numpy's path contains the Python one's prefix: replace the longer one first.
        new = text
        for old, fresh in replacements.items():
            new = new.replace(old, fresh)
        if new != text:
            path.write_text(new, errors='surrogateescape')
            changed.append(path)
    return changed


def main() -> int:
    prefix = Path(sys.argv[1] if len(sys.argv) > 1 else sys.prefix)
    changed = fix_exports(prefix)
    print(f'fix_cmake_exports: {len(changed)} file(s) patched under {prefix / "share"}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
