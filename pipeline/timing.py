"""Seconds spent per stage of a run, for report.json's ``timings_s``."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator


@dataclass
class Stopwatch:
    """Seconds per stage; stages run on several threads add up their threads' time."""

    timings: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t0, 3)
