"""Ctrl-C and SIGTERM for a running search.

The first signal starts no new trial and lets the running ones finish; the second stops their
processes at once. Either way the search closes every record before it exits.
"""

from __future__ import annotations

import signal
import threading

from orchestrator.progress import StudyProgress
from orchestrator.scheduler import Children


class Interrupt:
    def __init__(self, progress: StudyProgress, children: Children):
        self.progress, self.children = progress, children
        self.count = 0
        self._previous: dict = {}

    @property
    def requested(self) -> bool:
        return self.count > 0

    def __enter__(self) -> Interrupt:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        self.count += 1
        if self.count == 1:
            self.progress.print(f"{signal.Signals(signum).name}: no new trials; waiting for {len(self.children)} "
                                f"running trial(s) to finish. Press Ctrl-C again to stop them now.")
            return
        self.progress.print(f"{signal.Signals(signum).name}: stopping {len(self.children)} running trial(s) now.")
        self.children.terminate_all()
        raise KeyboardInterrupt
