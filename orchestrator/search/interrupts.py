"""Ctrl-C and SIGTERM for a running search, in every phase.

- While trials run (`patient`), the first signal starts no new trial and lets the running ones
  finish; the second stops their processes at once.
- In every other phase (checking input, preparing data, the baseline, the test evaluation), a
  signal stops the search at once (`KeyboardInterrupt`), except inside `critical()` sections:
  writes to the stores that must not be cut in half (the study and its parent run being
  created, the champion being registered) finish first, then the search stops.
- Once stopping (`stopping()`), further signals are noted and ignored, so the records are closed.
Either way the search closes every record before it exits with 130. Handlers run in the main
thread, so `critical()` is for code on the main thread.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

from orchestrator.execution.processes import Children
from orchestrator.search.progress import StudyProgress


class Interrupt:
    def __init__(self, progress: StudyProgress, children: Children):
        self.progress, self.children = progress, children
        self.count = 0
        self.patient = False
        self._critical = 0
        self._pending = False
        self._stopping = False
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

    @contextmanager
    def critical(self):
        """A section a signal must not cut in half: the stop waits for its end."""
        self._critical += 1
        try:
            yield
        finally:
            self._critical -= 1
        if self._critical == 0 and self._pending and not self._stopping:
            self._pending = False
            raise KeyboardInterrupt

    def stopping(self) -> None:
        """From now on the search is closing its records: signals are noted, not acted on."""
        self._stopping = True

    def _handle(self, signum, frame) -> None:
        self.count += 1
        name = signal.Signals(signum).name
        if self._stopping:
            self.progress.print(f"{name}: already stopping; closing the study's records first")
            return
        if self.patient and self.count == 1:
            self.progress.print(f"{name}: no new trials; waiting for {len(self.children)} running trial(s) to "
                                f"finish. Press Ctrl-C again to stop them now.")
            return
        if self._critical:
            self._pending = True
            self.progress.print(f"{name}: finishing the current write to the stores, then stopping")
            return
        if self.patient:
            self.progress.print(f"{name}: stopping {len(self.children)} running trial(s) now.")
            self.children.terminate_all()
        else:
            self.progress.print(f"{name}: stopping")
        raise KeyboardInterrupt
