"""SIGINT/SIGTERM for a command: the first signal asks the run to stop at a safe point; a second exits at once.

Python's default SIGINT raises KeyboardInterrupt wherever the main thread happens to be — inside Ray's
start-up, a lock, a C call — and the interpreter then exits with threads still inside Ray's core worker (a
segfault seen in 1 run of 2). Here the handler only records the signal; the scheduler notices it between steps,
winds the run down (stop dispatching, let in-flight parts settle for a bounded time, checkpoint) and only
then shuts Ray down. A second signal means "now": one line, and the process exits with the signal's status
without unwinding (the manifest's last checkpoints stay; the next invocation resumes from them).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from datetime import datetime

EXIT_BY_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}
EXIT_PAUSED = 75  # EX_TEMPFAIL, "try again later": outside schedule.window; the next invocation continues


class Interrupts:
    """Installed by a command on the main thread; `requested` is set by the first SIGINT/SIGTERM, or by
    `pause` (the transfer window closed: the same safe stop, reported `paused`)."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.signum: int | None = None
        self.paused_until: datetime | None = None  # set by pause(): when the next window opens
        self._previous: dict[int, object] = {}
        self._installed = False

    @property
    def exit_status(self) -> int:
        if self.signum is not None:
            return EXIT_BY_SIGNAL.get(self.signum, 130)
        return EXIT_PAUSED if self.paused_until is not None else 0

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    @property
    def paused(self) -> bool:
        """Stopped by the window (not by a signal)."""
        return self.signum is None and self.paused_until is not None

    def install(self) -> Interrupts:
        """Take SIGINT and SIGTERM (main thread only; elsewhere a no-op, e.g. a scan inside `watch`).
        Ray's start-up installs a SIGTERM handler of its own: call again after it."""
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in EXIT_BY_SIGNAL:
            previous = signal.signal(sig, self._handle)
            if not self._installed:
                self._previous[sig] = previous
        self._installed = True
        return self

    def uninstall(self) -> None:
        if not self._installed or threading.current_thread() is not threading.main_thread():
            return
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._installed = False

    def _handle(self, signum, _frame) -> None:
        if self.requested.is_set() and self.signum is not None:  # (after a pause, a signal is the first)
            sys.stderr.write(f"\ndth-ray: {signal.Signals(signum).name} again: exiting now; rerun the same "
                             "command to resume\n")
            sys.stderr.flush()
            os._exit(EXIT_BY_SIGNAL.get(signum, 130))
        self.signum = signum
        self.paused_until = None
        self.requested.set()
        sys.stderr.write(f"\ndth-ray: {signal.Signals(signum).name}: stopping at a safe point "
                         "(send it again to exit at once)\n")
        sys.stderr.flush()

    def pause(self, until: datetime) -> None:
        """Stop at a safe point because the transfer window closed; `until` is when the next one opens."""
        if not self.requested.is_set():
            self.paused_until = until
            self.requested.set()

    def request(self, signum: int = signal.SIGINT) -> None:
        """Ask for a stop as a signal would (tests, and `watch` stopping its scan)."""
        if not self.requested.is_set():
            self.signum = signum
            self.requested.set()


class Interrupted(Exception):
    """The command stopped on a signal before it had anything to report (e.g. while planning)."""

    def __init__(self, interrupts: Interrupts, message: str):
        super().__init__(message)
        self.exit_status = interrupts.exit_status
