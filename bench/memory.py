"""Peak memory of this process over a block of work, from /proc (Linux).

The kernel's high-water mark (VmHWM) is reset at the start of each block (`clear_refs` 5), so
one process can measure several phases apart. A sampling thread also records the peak of
anonymous memory alone (RssAnon): a safetensors load maps its shard files, and those
file-backed pages count towards RSS although the kernel can drop them under pressure.
"""

from __future__ import annotations

import threading
from pathlib import Path

GIB = 1024**3
_STATUS = Path('/proc/self/status')


def _status_kib(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ':'):
            return int(line.split()[1])
    raise KeyError(field)


class PeakMemory:
    """with PeakMemory() as peak: ...; then peak.report() -> {'peak_rss_gib', 'peak_anon_gib'}."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.peak_anon_kib = 0
        self.peak_rss_kib = 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_anon_kib = max(self.peak_anon_kib, _status_kib('RssAnon'))
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakMemory:
        Path('/proc/self/clear_refs').write_text('5')  # reset VmHWM to the current RSS
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_anon_kib = max(self.peak_anon_kib, _status_kib('RssAnon'))
        self.peak_rss_kib = _status_kib('VmHWM')

    def report(self) -> dict[str, float]:
        return {
            'peak_rss_gib': round(self.peak_rss_kib * 1024 / GIB, 2),
            'peak_anon_gib': round(self.peak_anon_kib * 1024 / GIB, 2),
        }
