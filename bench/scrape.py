"""A Prometheus stand-in for the CPU benchmark: GET a system's /metrics every second while the load runs.

fsmfast's counters are summed by its master at scrape time, so a gateway "with metrics collected"
costs what the workers' counting and publishing cost plus what answering scrapes costs the master;
both are in the process tree the harness measures. The scraper itself runs in the harness process,
whose CPU is not counted, as a real Prometheus would run elsewhere. Once a second is a short
interval (Prometheus' default is 1 minute, 15 s is common), so this overstates the cost if anything.
"""

from __future__ import annotations

import threading
import urllib.request

INTERVAL = 1.0


class Scraper:
    def __init__(self, url: str, interval: float = INTERVAL) -> None:
        self.url = url
        self.interval = interval
        self.scrapes = 0
        self.failures = 0
        self.last_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scraper", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                with urllib.request.urlopen(self.url, timeout=5) as resp:
                    self.last_bytes = len(resp.read())
                self.scrapes += 1
            except OSError:
                self.failures += 1

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
