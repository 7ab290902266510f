"""Every generation is a job: ids, one worker thread running jobs in submission order, and a persistent history.

``JobQueue.submit(kind, params, fn)`` queues ``fn(state)``, where ``state`` is the job's own ``JobState`` (so
interrupt / skip / progress address that job only), and returns a ``Job`` whose ``future`` resolves to the
``JobOutput`` that ``fn`` returned. Status calls (``progress``, ``pending``, ``history``, ``interrupt``...) only take a
short lock and answer immediately while a job runs. A job that raises is recorded as failed; the worker carries on.
Finished jobs (done / interrupted / failed / cancelled) are written to SQLite, so the history survives a restart.
"""
from __future__ import annotations

import base64
import enum
import io
import json
import logging
import secrets
import sqlite3
import string
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from modules.progress import JobState

log = logging.getLogger(__name__)

DEFAULT_MAX_PENDING = 100
_TASK_ID_ALPHABET = string.ascii_uppercase + string.digits


class JobStatus(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    INTERRUPTED = "interrupted"
    FAILED = "failed"
    CANCELLED = "cancelled"


class QueueFull(Exception):
    """The queue already holds its maximum number of pending jobs."""


class JobCancelled(Exception):
    """Set on the future of a job that was cancelled before it ran."""


@dataclass
class JobOutput:
    """What a job function returns: ``value`` goes to whoever waits on the job; the rest goes into the history."""
    value: Any = None
    infotext: str = ""
    files: list[str] = field(default_factory=list)
    notes: str = ""     # what went wrong without stopping the job (an always-on script that failed): the history's error


JobFn = Callable[[JobState], JobOutput]


@dataclass(eq=False)
class Job:
    id: str
    kind: str
    params: dict[str, Any]
    fn: JobFn = field(repr=False)
    state: JobState = field(default_factory=JobState, repr=False)
    status: JobStatus = JobStatus.QUEUED
    error: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    future: Future[JobOutput] = field(default_factory=Future, repr=False)

    def result(self, timeout: float | None = None) -> JobOutput:
        """Block until the job ends; raises what the job raised, or ``JobCancelled``."""
        return self.future.result(timeout)


@dataclass(frozen=True)
class HistoryEntry:
    id: str
    kind: str
    params: dict[str, Any]
    status: JobStatus
    error: str | None
    infotext: str
    files: list[str]
    created: float
    started: float | None
    finished: float

    @property
    def duration(self) -> float | None:
        """Seconds the job ran (None for a job cancelled before it started)."""
        return None if self.started is None else self.finished - self.started


@dataclass(frozen=True)
class TaskProgress:
    """One task's progress, with the fields of A1111's ``/internal/progress`` plus ``status`` and queue position."""
    active: bool = False
    queued: bool = False
    completed: bool = False
    progress: float | None = None
    eta: float | None = None
    live_preview: str | None = None      # data:image/png;base64,... when a newer preview than asked for exists
    id_live_preview: int = -1
    textinfo: str | None = None
    status: JobStatus | None = None      # None: no such task (yet)
    queue_position: int | None = None    # 0 = next to run


def new_task_id(kind: str) -> str:
    """A1111's task id layout: ``task(<kind>-XXXXXXX)`` with 7 upper-case letters / digits."""
    return f"task({kind}-{''.join(secrets.choice(_TASK_ID_ALPHABET) for _ in range(7))})"


class JobQueue:
    def __init__(self, history_db: Path, *, max_pending: int = DEFAULT_MAX_PENDING) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.max_pending = max_pending
        self._history = _HistoryDb(history_db)
        self._pending: deque[Job] = deque()
        self._current: Job | None = None
        self._closed = False
        self._cond = threading.Condition()
        self._worker = threading.Thread(target=self._work, name="job-queue-worker", daemon=True)
        self._worker.start()

    # -- submitting and waiting -----------------------------------------------------------------------------------
    def submit(self, kind: str, params: dict[str, Any], fn: JobFn, *, task_id: str | None = None) -> Job:
        """Queue ``fn``; ``params`` (JSON-serialisable) is what the history records about the request.

        Raises ``QueueFull`` when ``max_pending`` jobs are waiting, ``ValueError`` when ``task_id`` is already queued
        or running, and ``RuntimeError`` after ``close()``.
        """
        json.dumps(params)  # fail here, in the caller, rather than when the history is written
        job = Job(id=task_id or new_task_id(kind), kind=kind, params=params, fn=fn)
        with self._cond:
            if self._closed:
                raise RuntimeError("the job queue is shut down")
            if self._find_live(job.id) is not None:
                raise ValueError(f"task id {job.id!r} is already queued or running")
            if len(self._pending) >= self.max_pending:
                raise QueueFull(f"the queue is full ({self.max_pending} jobs waiting); try again later")
            self._pending.append(job)
            self._cond.notify_all()
        return job

    @staticmethod
    def wait(job: Job, timeout: float | None = None) -> JobOutput:
        return job.result(timeout)

    # -- reading ---------------------------------------------------------------------------------------------------
    @property
    def current(self) -> Job | None:
        """The running job, if any."""
        return self._current

    def pending(self) -> list[Job]:
        """Jobs waiting to run, next first."""
        with self._cond:
            return list(self._pending)

    def progress(self, task_id: str, *, live_preview: bool = False, id_live_preview: int = -1) -> TaskProgress:
        with self._cond:
            running = self._current if self._current is not None and self._current.id == task_id else None
            position = next((i for i, job in enumerate(self._pending) if job.id == task_id), None)
        if running is not None:
            return _running_progress(running, live_preview, id_live_preview)
        if position is not None:
            return TaskProgress(queued=True, status=JobStatus.QUEUED, queue_position=position,
                                textinfo=f"In queue: {position} task(s) ahead")
        entry = self._history.get(task_id)
        if entry is not None:
            return TaskProgress(completed=True, progress=1.0, status=entry.status,
                                textinfo=entry.error or entry.status.value.capitalize())
        return TaskProgress(textinfo="Waiting...")

    def history(self, *, limit: int = 50, offset: int = 0, kind: str | None = None) -> list[HistoryEntry]:
        """Finished jobs, newest first."""
        return self._history.list(limit=limit, offset=offset, kind=kind)

    def history_entry(self, task_id: str) -> HistoryEntry | None:
        return self._history.get(task_id)

    # -- control ---------------------------------------------------------------------------------------------------
    def cancel(self, task_id: str) -> Job:
        """Remove a queued job (recorded as cancelled), or interrupt it if it is running. ``KeyError`` if neither."""
        with self._cond:
            if self._current is not None and self._current.id == task_id:
                self._current.state.interrupt()
                return self._current
            job = next((j for j in self._pending if j.id == task_id), None)
            if job is None:
                raise KeyError(task_id)
            self._pending.remove(job)
        self._finish_cancelled(job, "cancelled before it started")
        return job

    def interrupt(self, task_id: str | None = None) -> Job | None:
        """Interrupt the running job (only if it has ``task_id``, when given); returns it, or None."""
        job = self._running(task_id)
        if job is not None:
            job.state.interrupt()
        return job

    def skip(self, task_id: str | None = None) -> Job | None:
        """Skip the running job's current batch (only if it has ``task_id``, when given); returns it, or None."""
        job = self._running(task_id)
        if job is not None:
            job.state.skip()
        return job

    def close(self, timeout: float | None = 30.0) -> None:
        """Cancel pending jobs, interrupt the running one, stop the worker and close the history database."""
        with self._cond:
            self._closed = True
            cancelled = list(self._pending)
            self._pending.clear()
            if self._current is not None:
                self._current.state.interrupt()
            self._cond.notify_all()
        for job in cancelled:
            self._finish_cancelled(job, "cancelled: the server is shutting down")
        self._worker.join(timeout)
        self._history.close()

    # -- internals -------------------------------------------------------------------------------------------------
    def _find_live(self, task_id: str) -> Job | None:
        if self._current is not None and self._current.id == task_id:
            return self._current
        return next((job for job in self._pending if job.id == task_id), None)

    def _running(self, task_id: str | None) -> Job | None:
        with self._cond:
            job = self._current
        if job is None or (task_id is not None and job.id != task_id):
            return None
        return job

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                job = self._pending.popleft()
                runnable = job.future.set_running_or_notify_cancel()  # False: its future was cancelled meanwhile
                if runnable:
                    job.state.begin(job=job.kind)
                    job.status, job.started = JobStatus.RUNNING, time.time()
                    self._current = job
            if not runnable:
                self._finish_cancelled(job, "cancelled before it started")
                continue
            try:
                self._run(job)
            finally:
                with self._cond:
                    self._current = None

    def _run(self, job: Job) -> None:
        error: Exception | None = None
        try:
            output = job.fn(job.state)
            if not isinstance(output, JobOutput):
                raise TypeError(f"a job function must return a JobOutput, not {type(output).__name__}")
        except Exception as e:  # a failing job is recorded; it never stops the worker
            log.exception("Job %s (%s) failed", job.id, job.kind)
            error, output = e, JobOutput()
        job.state.end()
        job.finished = time.time()
        if error is None:
            job.status = JobStatus.INTERRUPTED if job.state.interrupted else JobStatus.DONE
            job.error = output.notes or None
        else:
            job.status, job.error = JobStatus.FAILED, f"{type(error).__name__}: {error}"
        self._record(job, output)
        if error is None:
            job.future.set_result(output)
        else:
            job.future.set_exception(error)

    def _finish_cancelled(self, job: Job, reason: str) -> None:
        job.status, job.error, job.finished = JobStatus.CANCELLED, reason, time.time()
        self._record(job, JobOutput())
        if not job.future.cancelled():
            job.future.set_exception(JobCancelled(f"{job.id} was {reason}"))

    def _record(self, job: Job, output: JobOutput) -> None:
        assert job.finished is not None
        entry = HistoryEntry(id=job.id, kind=job.kind, params=job.params, status=job.status, error=job.error,
                             infotext=output.infotext, files=list(output.files), created=job.created,
                             started=job.started, finished=job.finished)
        try:
            self._history.add(entry)
        except sqlite3.Error:
            log.exception("Could not record job %s in the history", job.id)


def _running_progress(job: Job, live_preview: bool, id_live_preview: int) -> TaskProgress:
    state = job.state
    preview, preview_id = None, id_live_preview
    if live_preview and state.current_image is not None and state.id_live_preview != id_live_preview:
        preview, preview_id = _png_data_url(state.current_image), state.id_live_preview
    return TaskProgress(active=True, status=JobStatus.RUNNING, progress=state.progress(), eta=state.eta(),
                        live_preview=preview, id_live_preview=preview_id, textinfo=state.textinfo)


def _png_data_url(image: Any) -> str:
    """``data:image/png;base64,...`` for a PIL image."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class _HistoryDb:
    """Finished jobs in one SQLite table; one connection shared by the threads under a lock."""

    _SCHEMA = """
        CREATE TABLE IF NOT EXISTS jobs (
            id TEXT PRIMARY KEY, kind TEXT NOT NULL, params TEXT NOT NULL, status TEXT NOT NULL, error TEXT,
            infotext TEXT NOT NULL, files TEXT NOT NULL, created REAL NOT NULL, started REAL, finished REAL NOT NULL
        );
        CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished);
    """
    _COLUMNS = "id, kind, params, status, error, infotext, files, created, started, finished"

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, check_same_thread=False)
        with self._lock, self._conn:
            self._conn.executescript(self._SCHEMA)

    def add(self, e: HistoryEntry) -> None:
        row = (e.id, e.kind, json.dumps(e.params), e.status.value, e.error, e.infotext, json.dumps(e.files),
               e.created, e.started, e.finished)
        with self._lock, self._conn:
            self._conn.execute(f"INSERT OR REPLACE INTO jobs ({self._COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)", row)

    def get(self, task_id: str) -> HistoryEntry | None:
        with self._lock:
            row = self._conn.execute(f"SELECT {self._COLUMNS} FROM jobs WHERE id = ?", (task_id,)).fetchone()
        return None if row is None else self._entry(row)

    def list(self, *, limit: int, offset: int, kind: str | None) -> list[HistoryEntry]:
        where, args = ("WHERE kind = ?", [kind]) if kind is not None else ("", [])
        query = f"SELECT {self._COLUMNS} FROM jobs {where} ORDER BY finished DESC, rowid DESC LIMIT ? OFFSET ?"
        with self._lock:
            rows = self._conn.execute(query, [*args, limit, offset]).fetchall()
        return [self._entry(row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @staticmethod
    def _entry(row: tuple[Any, ...]) -> HistoryEntry:
        id_, kind, params, status, error, infotext, files, created, started, finished = row
        return HistoryEntry(id=id_, kind=kind, params=json.loads(params), status=JobStatus(status), error=error,
                            infotext=infotext, files=json.loads(files), created=created, started=started,
                            finished=finished)
