"""Adaptive micro-batching: the rows of concurrent requests go to the model in one call."""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable

import numpy as np

from skserve.scoring import Score

log = logging.getLogger(__name__)

_PENDING = np.empty((0, 0))


class _Job:
    """One request's validated rows, and the slot its answer is delivered to."""

    __slots__ = ("done", "outcome", "rows")

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows
        self.outcome: np.ndarray | Exception = _PENDING
        # A bare lock is the cheapest one-shot signal: held now, released once the answer is in.
        self.done = threading.Lock()
        self.done.acquire()


class Batcher:
    """Scores each submitted matrix of rows, sharing model calls between concurrent submitters.

    A submission that finds the model idle, nothing queued and the last call made for one
    request alone is scored at once in the caller's thread: a lone caller pays nothing for
    batching. Otherwise it is queued for the batching thread, which concatenates the queued
    matrices (at most `max_rows` rows; a larger matrix goes alone), calls `score` once and hands
    each submitter its own rows of the result. After a call for several requests the thread
    first waits, at most `max_wait_s`, until as many requests are queued as in the largest batch
    since such a wait last ran out, so that N callers in a loop keep sharing one call.

    An exception from `score` reaches only the submitter whose rows caused it: a failed batch is
    scored again request by request. The thread starts with the first queued submission in each
    process, so a batcher built before gunicorn forks runs in the worker, never in the master.
    `close` scores what is queued and stops the thread; later submissions are scored at once.
    """

    def __init__(
        self,
        score: Score,
        *,
        max_rows: int,
        max_wait_s: float,
        on_batch: Callable[[int], object] | None = None,
    ) -> None:
        if max_rows < 1 or max_wait_s < 0:
            raise ValueError(f"need max_rows >= 1 and max_wait_s >= 0, got {max_rows} and {max_wait_s}")
        self.score = score
        self.max_rows = max_rows
        self.max_wait_s = max_wait_s
        self.on_batch = on_batch
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._queue: deque[_Job] = deque()
        self._queued_rows = 0
        self._busy = False  # a model call is running, in the thread or in a caller's
        self._last_batch = 0  # requests answered by the latest call
        self._expected = 1  # requests to wait for after a call for several
        self._wanted = 1  # queued requests that make it worth waking the thread
        self._closed = False
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def submit(self, rows: np.ndarray) -> np.ndarray:
        """The model's output for `rows` (already validated), computed in some batch; blocks until ready."""
        job = None
        with self._lock:
            alone = not (self._closed or self._busy or self._queue or self._last_batch > 1)
            if alone:
                self._busy = True
            elif not self._closed:
                job = self._enqueue(rows)
        if job is not None:
            job.done.acquire()
            if isinstance(job.outcome, Exception):
                raise job.outcome
            return job.outcome
        if not alone:  # closed
            return self.score(rows)
        try:
            result = self.score(rows)
        finally:
            with self._lock:
                self._busy = False
                self._last_batch = 1
                if self._queue:
                    self._changed.notify()
        self._observe(len(rows))
        return result

    @property
    def queued(self) -> int:
        """Requests waiting for the batching thread."""
        return len(self._queue)

    def close(self, timeout: float | None = None) -> None:
        """Score every queued request, then stop the thread (waiting at most `timeout` seconds)."""
        with self._lock:
            self._closed = True
            self._changed.notify()
            thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join(timeout)

    def _enqueue(self, rows: np.ndarray) -> _Job:
        """Queue `rows` for the thread (called holding the lock)."""
        if self._thread is None or not self._thread.is_alive():
            self._start()
        job = _Job(rows)
        self._queue.append(job)
        self._queued_rows += len(rows)
        if len(self._queue) >= self._wanted or self._queued_rows >= self.max_rows:
            self._changed.notify()
        return job

    def _start(self) -> None:
        if self._pid != os.getpid():
            # Forked from the process that started the previous thread: what it queued belongs to
            # waiters that do not exist here.
            self._pid = os.getpid()
            self._queue.clear()
            self._queued_rows = 0
            self._busy = False
        self._thread = threading.Thread(target=self._run, name="skserve-batcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        jobs: list[_Job] = []
        while True:
            with self._lock:
                if jobs:
                    self._busy = False  # this thread's own call is over
                jobs = self._next_batch()
            if not jobs:
                return
            self._run_batch(jobs)

    def _next_batch(self) -> list[_Job]:
        """Wait for work (called holding the lock); an empty list means closed and drained."""
        while not self._queue or self._busy:
            if self._closed and not self._queue:
                return []
            self._changed.wait()
        if self._last_batch > 1 and self.max_wait_s > 0 and not self._closed:
            # Callers are arriving together: give those of the last batches a moment to come
            # back, so they share the next call instead of each group paying for one.
            self._wanted = self._expected
            if not self._changed.wait_for(self._full_enough, self.max_wait_s):
                self._expected = len(self._queue)  # fewer callers than before
            self._wanted = 1
        jobs = [self._queue.popleft()]
        rows = len(jobs[0].rows)
        while self._queue and rows + len(self._queue[0].rows) <= self.max_rows:
            job = self._queue.popleft()
            rows += len(job.rows)
            jobs.append(job)
        self._queued_rows -= rows
        self._busy = True
        self._last_batch = len(jobs)
        self._expected = max(self._expected, len(jobs))
        return jobs

    def _full_enough(self) -> bool:
        return self._closed or len(self._queue) >= self._wanted or self._queued_rows >= self.max_rows

    def _run_batch(self, jobs: list[_Job]) -> None:
        """Score the jobs' rows in one call and deliver each its slice.

        If the call fails, each job is scored again alone, so each gets exactly the answer or the
        error it would have had unbatched: a request the model cannot handle fails by itself.
        """
        try:
            rows = jobs[0].rows if len(jobs) == 1 else np.concatenate([job.rows for job in jobs])
            result = self.score(rows)
            if len(result) != len(rows):
                raise ValueError(f"the model returned {len(result)} results for {len(rows)} rows")
        except Exception as error:
            if len(jobs) > 1:
                for job in jobs:
                    self._run_batch([job])
                return
            jobs[0].outcome = error
            jobs[0].done.release()
            return
        start = 0
        for job in jobs:
            stop = start + len(job.rows)
            job.outcome = result[start:stop]
            job.done.release()
            start = stop
        self._observe(len(rows))

    def _observe(self, rows: int) -> None:
        if self.on_batch is not None:
            try:
                self.on_batch(rows)
            except Exception:  # a failing observer must not stop the thread every request needs
                log.exception("batch observer failed")
