"""Where the synthetic generator's time goes: a phase timer that code under measurement laps, and a no-op default.

Production code calls ``timer.lap(phase)`` at the end of each phase; the default :data:`NO_TIMER` does nothing,
so an unmeasured run behaves exactly as before. ``benchmarks/bench_synth.py`` passes a :class:`PhaseTimer`.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class PhaseTimer:
    """Wall and CPU seconds per named phase: ``lap(name)`` charges the time since the previous lap to ``name``.

    ``sync`` (called first, only when timing) waits for work queued elsewhere, e.g. the GL driver's ``finish``,
    so that work is charged to the phase that queued it rather than to the next one that waits for it.
    CPU seconds are the whole process's (every thread, e.g. the rasteriser's), so they do not count waiting for a
    core held by another process.
    """

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.restart()

    def restart(self) -> None:
        """Start the next lap now (time since the previous lap is charged to nothing)."""
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def lap(self, phase: str, sync: Callable[[], object] | None = None) -> None:
        if sync is not None:
            sync()
        wall, cpu = time.perf_counter(), time.process_time()
        self.wall[phase] = self.wall.get(phase, 0.0) + wall - self._wall
        self.cpu[phase] = self.cpu.get(phase, 0.0) + cpu - self._cpu
        self._wall, self._cpu = wall, cpu


class _NoTimer(PhaseTimer):
    """Does nothing (and never calls ``sync``)."""

    def __init__(self) -> None:
        pass

    def restart(self) -> None:
        pass

    def lap(self, phase: str, sync: Callable[[], object] | None = None) -> None:
        pass


NO_TIMER: PhaseTimer = _NoTimer()
