"""Work handed to a background thread, in order, so that the model never waits for it."""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Callable, Iterable, Iterator

_DONE = object()


class InOrderWorker:
    """Runs `work(item)` on one background thread for every item `put`, in order, with at
    most `depth` items waiting (memory stays bounded; `put` blocks when it is full). The
    caller goes on with the next model call while earlier results are copied off the device
    and written. An error in `work` is raised again in the caller by the next `put` or by
    `close`; leaving the `with` block on an error drops the waiting items."""

    def __init__(self, work: Callable[[object], None], depth: int = 2):
        self._work = work
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not _DONE:
            if self._error is None:
                try:
                    self._work(item)
                except BaseException as err:  # handed to the caller
                    self._error = err

    def _raise_pending(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def put(self, item) -> None:
        self._raise_pending()
        self._queue.put(item)

    def close(self) -> None:
        """Wait until every item is done; raise the first error, if any."""
        if self._thread.is_alive():
            self._queue.put(_DONE)
            self._thread.join()
        self._raise_pending()

    def __enter__(self) -> InOrderWorker:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        while True:  # drop what waits, then stop without masking the caller's error
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put(_DONE)
        self._thread.join()
        self._error = None


def prefetched(items: Iterable, transform: Callable = lambda item: item, depth: int = 2,
               cancel: Callable[[], None] | None = None) -> Iterator:  # fmt: skip
    """Yield `transform(item)` for every item, produced ahead on a background thread (at
    most `depth` waiting). An error there is raised here. When the consumer stops early,
    `cancel` is called to unblock the producer (for example, kill the process it reads)."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            for item in items:
                if stop.is_set():
                    return
                ready.put((True, transform(item)))
            ready.put((False, None))
        except BaseException as err:  # handed to the consumer
            ready.put((False, err))

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            more, value = ready.get()
            if not more:
                if value is not None:
                    raise value
                return
            yield value
    finally:
        stop.set()
        if cancel is not None and thread.is_alive():
            cancel()
        # Unblock a producer waiting on a full queue. Not at interpreter exit: a daemon
        # thread that wakes then is stopped without ever ending, and this would wait forever.
        while thread.is_alive() and not sys.is_finalizing():
            try:
                ready.get_nowait()
            except queue.Empty:
                thread.join(0.05)
