"""Every generation is a job: ids, one worker thread running jobs in submission order, and a persistent history.

``JobQueue.submit(kind, params, fn)`` queues ``fn(state)``, where ``state`` is the job's own ``JobState`` (so
interrupt / skip / progress address that job only), and returns a ``Job`` whose ``future`` resolves to the
``JobOutput`` that ``fn`` returned. Status calls (``progress``, ``pending``, ``history``, ``interrupt``...) only take a
short lock and answer immediately while a job runs.

The worker cannot die from a job: whatever a job raises (``SystemExit`` and ``KeyboardInterrupt`` included) is
recorded as that job's failure and the worker carries on; a watchdog restarts the worker thread should it ever stop.

Every job has its row in SQLite from the moment it is queued (``queued`` -> ``running`` -> ``done`` / ``interrupted``
/ ``failed`` / ``cancelled``), files a job saves are added to its row as they are written (``note_saved_file``), and
rows a killed process left ``queued`` or ``running`` are marked ``interrupted`` ("interrupted by restart") when the
next queue opens the database. Text reaching SQLite is made valid UTF-8 and rows are read defensively, so one odd
row can never break the history.
"""
from __future__ import annotations

import base64
import enum
import io
import json
import logging
import re
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
WATCHDOG_INTERVAL = 1.0
INTERRUPTED_BY_RESTART = "interrupted by restart"
_TASK_ID_ALPHABET = string.ascii_uppercase + string.digits
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


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


class JobAborted(Exception):
    """Set on the future of a job that raised ``SystemExit``, ``KeyboardInterrupt`` or another non-``Exception``
    (the original is ``__cause__``), or whose worker stopped under it; awaiting it never stops the caller."""


FINAL_STATUSES = frozenset({JobStatus.DONE, JobStatus.INTERRUPTED, JobStatus.FAILED, JobStatus.CANCELLED})


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
    saved_files: list[str] = field(default_factory=list)   # files written so far (``note_saved_file``)
    future: Future[JobOutput] = field(default_factory=Future, repr=False)
    batch_key: Any = None        # jobs with the same (non-None) key may run together as one batch (modules.batching)
    group: list["Job"] = field(default_factory=list, repr=False)   # the jobs taken with this one (itself included)
    notes: list[str] = field(default_factory=list, repr=False)     # what the runner adds to the history's error

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
    finished: float | None   # None while the job is queued or running

    @property
    def duration(self) -> float | None:
        """Seconds the job ran (None for a job that never started or has not finished)."""
        return None if self.started is None or self.finished is None else self.finished - self.started


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


_current_job = threading.local()   # the job the worker on this thread runs (``note_saved_file``)


def current_job() -> Job | None:
    """The job whose function runs on this thread, if any."""
    return getattr(_current_job, "job", None)


def note_saved_file(path: str | Path) -> None:
    """Link a file just written to the job running on this thread (if any), in its history row at once: the files
    of a job killed half-way are still in its row. Called by ``images.save_image``."""
    job, queue = getattr(_current_job, "job", None), getattr(_current_job, "queue", None)
    if job is None or queue is None:
        return
    job.saved_files.append(str(path))
    queue._history.set_files(job.id, job.saved_files)


class JobQueue:
    def __init__(self, history_db: Path, *, max_pending: int = DEFAULT_MAX_PENDING,
                 watchdog_interval: float = WATCHDOG_INTERVAL, workers: int = 1,
                 batch_limit: Callable[[], int] | int = 1) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.max_pending = max_pending
        self._history = _HistoryDb(history_db)
        lost = self._history.mark_lost(INTERRUPTED_BY_RESTART)
        if lost:
            log.warning("%d job(s) left queued or running by a previous run are marked %r", lost,
                        INTERRUPTED_BY_RESTART)
        self._pending: deque[Job] = deque()
        self._current: list[Job] = []   # running jobs, oldest first (several with batches or several workers)
        self._closed = False
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self.worker_restarts = 0
        self._batch_limit = batch_limit if callable(batch_limit) else (lambda: batch_limit)
        self._workers = [self._start_worker() for _ in range(max(1, workers))]
        self._watchdog = threading.Thread(target=self._watch, args=(watchdog_interval,), name="job-queue-watchdog",
                                          daemon=True)
        self._watchdog.start()

    # -- submitting and waiting -----------------------------------------------------------------------------------
    def submit(self, kind: str, params: dict[str, Any], fn: JobFn, *, task_id: str | None = None,
               batch_key: Any = None) -> Job:
        """Queue ``fn``; ``params`` (JSON-serialisable) is what the history records about the request.

        Raises ``QueueFull`` when ``max_pending`` jobs are waiting, ``ValueError`` when ``task_id`` is already queued,
        running or in the history (a task id names one job for good), and ``RuntimeError`` after ``close()``.
        """
        json.dumps(params)  # fail here, in the caller, rather than when the history is written
        job = Job(id=task_id or new_task_id(kind), kind=kind, params=params, fn=fn, batch_key=batch_key)
        self._ensure_worker()
        with self._cond:
            if self._closed:
                raise RuntimeError("the job queue is shut down")
            if self._find_live(job.id) is not None:
                raise ValueError(f"task id {job.id!r} is already queued or running")
            if task_id is not None and self._history.get(job.id) is not None:
                raise ValueError(f"task id {job.id!r} was already used by another job; send a new one")
            if len(self._pending) >= self.max_pending:
                raise QueueFull(f"the queue is full ({self.max_pending} jobs waiting); try again later")
            self._write(job)
            self._pending.append(job)
            self._cond.notify_all()
        return job

    @staticmethod
    def wait(job: Job, timeout: float | None = None) -> JobOutput:
        return job.result(timeout)

    # -- reading ---------------------------------------------------------------------------------------------------
    @property
    def current(self) -> Job | None:
        """The running job (the oldest one when several run), if any."""
        running = self._current
        return running[0] if running else None

    def running(self) -> list[Job]:
        """Every running job, oldest first."""
        with self._cond:
            return list(self._current)

    @property
    def worker_alive(self) -> bool:
        return all(worker.is_alive() for worker in self._workers)

    def add_workers(self, count: int = 1) -> None:
        """More worker threads (one per remote worker that joined): that many jobs (or batches) run at once."""
        with self._cond:
            if not self._closed:
                self._workers.extend(self._start_worker() for _ in range(count))

    def pending(self) -> list[Job]:
        """Jobs waiting to run, next first."""
        with self._cond:
            return list(self._pending)

    def progress(self, task_id: str, *, live_preview: bool = False, id_live_preview: int = -1) -> TaskProgress:
        with self._cond:
            running = next((job for job in self._current if job.id == task_id), None)
            position = next((i for i, job in enumerate(self._pending) if job.id == task_id), None)
        if running is not None:
            return _running_progress(running, live_preview, id_live_preview)
        if position is not None:
            return TaskProgress(queued=True, status=JobStatus.QUEUED, queue_position=position,
                                textinfo=f"In queue: {position} task(s) ahead")
        entry = self._history.get(task_id)
        if entry is not None and entry.status in FINAL_STATUSES:
            return TaskProgress(completed=True, progress=1.0, status=entry.status,
                                textinfo=entry.error or entry.status.value.capitalize())
        if entry is not None:  # its row was written a moment before the job became visible here
            return TaskProgress(queued=entry.status is JobStatus.QUEUED, active=entry.status is JobStatus.RUNNING,
                                status=entry.status, textinfo=entry.status.value.capitalize())
        return TaskProgress(textinfo="Waiting...")

    def history(self, *, limit: int = 50, offset: int = 0, kind: str | None = None) -> list[HistoryEntry]:
        """Jobs, newest first: queued and running ones (no ``finished`` yet) before the finished ones."""
        return self._history.list(limit=limit, offset=offset, kind=kind)

    def history_entry(self, task_id: str) -> HistoryEntry | None:
        return self._history.get(task_id)

    # -- control ---------------------------------------------------------------------------------------------------
    def cancel(self, task_id: str) -> Job:
        """Remove a queued job (recorded as cancelled), or interrupt it if it is running. ``KeyError`` if neither."""
        with self._cond:
            running = next((j for j in self._current if j.id == task_id), None)
            if running is not None:
                running.state.interrupt()
                return running
            job = next((j for j in self._pending if j.id == task_id), None)
            if job is None:
                raise KeyError(task_id)
            self._pending.remove(job)
        self._finish_cancelled(job, "cancelled before it started")
        return job

    def interrupt(self, task_id: str | None = None, *, after_current: bool = False) -> Job | None:
        """Interrupt the running job (only if it has ``task_id``, when given; without it every running job); returns
        it, or None. ``after_current`` is the Interrupt button with A1111's "Don't Interrupt in the middle": a job
        making several images first stops after the current one (``JobState.interrupt_button``)."""
        jobs = self._running(task_id)
        for job in jobs:
            job.state.interrupt_button(after_current)
        return jobs[0] if jobs else None

    def skip(self, task_id: str | None = None) -> Job | None:
        """Skip the running job's current batch (only if it has ``task_id``, when given); returns it, or None."""
        jobs = self._running(task_id)
        for job in jobs:
            job.state.skip()
        return jobs[0] if jobs else None

    def close(self, timeout: float | None = 30.0) -> None:
        """Cancel pending jobs, interrupt the running one, stop the worker and close the history database."""
        with self._cond:
            self._closed = True
            cancelled = list(self._pending)
            self._pending.clear()
            for job in self._current:
                job.state.interrupt()
            self._cond.notify_all()
        self._stop.set()
        for job in cancelled:
            self._finish_cancelled(job, "cancelled: the server is shutting down")
        for worker in list(self._workers):
            worker.join(timeout)
        self._watchdog.join(timeout)
        self._history.close()

    # -- internals -------------------------------------------------------------------------------------------------
    def _find_live(self, task_id: str) -> Job | None:
        return next((job for job in (*self._current, *self._pending) if job.id == task_id), None)

    def _running(self, task_id: str | None) -> list[Job]:
        with self._cond:
            return [job for job in self._current if task_id is None or job.id == task_id]

    def _start_worker(self) -> threading.Thread:
        worker = threading.Thread(target=self._work, name="job-queue-worker", daemon=True)
        worker.start()
        return worker

    def _ensure_worker(self) -> None:
        """Restart a worker that stopped (it cannot stop through a job; this is the last line of defence). Jobs it
        left running are recorded as failed."""
        with self._cond:
            dead = [w for w in self._workers if not w.is_alive()]
            if self._closed or not dead:
                return
            lost = [job for job in self._current if getattr(job, "_worker", None) in dead]
            self._current = [job for job in self._current if job not in lost]
            for worker in dead:
                self.worker_restarts += 1
                log.error("The job worker stopped unexpectedly; starting a new one (restart %d)", self.worker_restarts)
                self._workers[self._workers.index(worker)] = self._start_worker()
        for job in lost:
            if not job.future.done():
                self._finish(job, JobOutput(files=list(job.saved_files)),
                             JobAborted("the job worker stopped unexpectedly while running this job"))

    def _watch(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self._ensure_worker()
            except Exception:  # noqa: BLE001 - the watchdog itself must keep going
                log.exception("Job queue watchdog")

    def _next_job(self) -> list[Job] | None:
        """Wait for the next job and mark it running, with the pending jobs of its batch key (up to the batch limit)
        taken along; None once the queue is closed."""
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            head = self._pending.popleft()
            group = [head]
            limit = self._batch_limit() if head.batch_key is not None else 1
            for job in list(self._pending):
                if len(group) >= limit:
                    break
                if job.batch_key == head.batch_key:
                    self._pending.remove(job)
                    group.append(job)
            for job in group:
                if not job.future.set_running_or_notify_cancel():  # its future was cancelled meanwhile
                    job.status = JobStatus.CANCELLED
                    continue
                job.state.begin(job=job.kind)
                job.status, job.started = JobStatus.RUNNING, time.time()
                job._worker = threading.current_thread()
                self._current.append(job)
            live = [job for job in group if job.status is not JobStatus.CANCELLED]
            for job in live:
                job.group = live
        for job in group:
            if job.status is not JobStatus.CANCELLED:
                self._write(job)
        return group

    def _work(self) -> None:
        while (group := self._next_job()) is not None:
            for job in group:
                if job.status is JobStatus.CANCELLED:
                    self._finish_cancelled(job, "cancelled before it started")
            live = [job for job in group if job.status is not JobStatus.CANCELLED]
            try:
                if len(live) == 1:
                    self._run(live[0])
                elif live:  # a batch: each job's function on its own thread; modules.batching joins them up
                    threads = [threading.Thread(target=self._run, args=(job,), name=f"job-{job.id}", daemon=True)
                               for job in live]
                    for thread in threads:
                        thread.start()
                    for thread in threads:
                        thread.join()
            finally:
                with self._cond:
                    self._current = [job for job in self._current if job not in live]

    def _run(self, job: Job) -> None:
        """Run one job under the guard: anything it raises, ``BaseException`` included, is that job's failure."""
        error: BaseException | None = None
        _current_job.job, _current_job.queue = job, self
        try:
            output = job.fn(job.state)
            if not isinstance(output, JobOutput):
                raise TypeError(f"a job function must return a JobOutput, not {type(output).__name__}")
        except BaseException as e:  # noqa: BLE001 - a failing job is recorded; it never stops the worker
            log.error("Job %s (%s) failed", job.id, job.kind, exc_info=e)
            error, output = e, JobOutput()
        finally:
            _current_job.job = _current_job.queue = None
        self._finish(job, output, error)

    def _finish(self, job: Job, output: JobOutput, error: BaseException | None) -> None:
        try:
            job.state.end()
        except Exception:  # noqa: BLE001 - a broken state must not lose the job's record
            log.exception("Job %s: ending its progress state failed", job.id)
        job.finished = time.time()
        if error is None:
            job.status = JobStatus.INTERRUPTED if job.state.interrupted else JobStatus.DONE
            job.error = "\n".join(filter(None, [*job.notes, output.notes])) or None
        else:
            job.status, job.error = JobStatus.FAILED, "\n".join([*job.notes, f"{type(error).__name__}: {error}"])
        files = list(output.files) + [f for f in job.saved_files if f not in output.files]
        self._write(job, output.infotext, files)
        with self._cond:  # no longer current before anyone waiting on it hears that it ended
            if job in self._current:
                self._current.remove(job)
        if error is None:
            job.future.set_result(output)
        elif isinstance(error, Exception):
            job.future.set_exception(error)
        else:  # SystemExit / KeyboardInterrupt must not travel into whoever awaits the job
            aborted = JobAborted(f"the job raised {type(error).__name__}: {error}")
            aborted.__cause__ = error
            job.future.set_exception(aborted)

    def _finish_cancelled(self, job: Job, reason: str) -> None:
        job.status, job.error, job.finished = JobStatus.CANCELLED, reason, time.time()
        self._write(job)
        if not job.future.cancelled():
            job.future.set_exception(JobCancelled(f"{job.id} was {reason}"))

    def _write(self, job: Job, infotext: str = "", files: list[str] | None = None) -> None:
        """Write the job's row as it is now; a database error is logged, never raised (the job goes on)."""
        entry = HistoryEntry(id=job.id, kind=job.kind, params=job.params, status=job.status, error=job.error,
                             infotext=infotext, files=list(job.saved_files if files is None else files),
                             created=job.created, started=job.started, finished=job.finished)
        try:
            self._history.put(entry)
        except Exception:  # noqa: BLE001
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


def valid_text(value: Any) -> Any:
    """``value`` with every string (dict keys too, at any depth) made valid UTF-8: lone surrogates become U+FFFD."""
    if isinstance(value, str):
        return LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {valid_text(k): valid_text(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [valid_text(v) for v in value]
    return value


class _HistoryDb:
    """One row per job in one SQLite table; one connection shared by the threads under a lock."""

    _SCHEMA = """
        CREATE TABLE IF NOT EXISTS jobs (
            id TEXT PRIMARY KEY, kind TEXT NOT NULL, params TEXT NOT NULL, status TEXT NOT NULL, error TEXT,
            infotext TEXT NOT NULL, files TEXT NOT NULL, created REAL NOT NULL, started REAL, finished REAL
        );
        CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished);
    """
    _COLUMNS = "id, kind, params, status, error, infotext, files, created, started, finished"
    _LIVE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, check_same_thread=False)
        with self._lock, self._conn:
            self._migrate()
            self._conn.executescript(self._SCHEMA)

    def _migrate(self) -> None:
        """Databases written before live jobs had rows declare ``finished`` NOT NULL: copy them into the new table."""
        columns = {row[1]: row[3] for row in self._conn.execute("PRAGMA table_info(jobs)")}
        if columns.get("finished"):
            self._conn.execute("ALTER TABLE jobs RENAME TO jobs_old")
            self._conn.execute("DROP INDEX IF EXISTS jobs_finished")
            self._conn.executescript(self._SCHEMA)
            self._conn.execute(f"INSERT INTO jobs ({self._COLUMNS}) SELECT {self._COLUMNS} FROM jobs_old")
            self._conn.execute("DROP TABLE jobs_old")

    def put(self, e: HistoryEntry) -> None:
        """Insert the job's row, or update it in place (its rowid, hence its place in the list, stays)."""
        row = valid_text([e.kind, json.dumps(valid_text(e.params), ensure_ascii=False), e.status.value, e.error,
                          e.infotext, json.dumps(e.files, ensure_ascii=False), e.created, e.started, e.finished])
        task_id = valid_text(e.id)
        with self._lock, self._conn:
            updated = self._conn.execute(
                "UPDATE jobs SET kind=?, params=?, status=?, error=?, infotext=?, files=?, created=?, started=?, "
                "finished=? WHERE id=?", (*row, task_id)).rowcount
            if not updated:
                self._conn.execute(f"INSERT INTO jobs ({self._COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                                   (task_id, *row))

    def set_files(self, task_id: str, files: list[str]) -> None:
        try:
            with self._lock, self._conn:
                self._conn.execute("UPDATE jobs SET files=? WHERE id=?",
                                   (json.dumps(valid_text(files), ensure_ascii=False), valid_text(task_id)))
        except Exception:  # noqa: BLE001 - linking a file must never fail the save
            log.exception("Could not link a saved file to job %s", task_id)

    def mark_lost(self, reason: str) -> int:
        """Rows a dead process left queued or running -> interrupted (``reason`` as their error); how many."""
        with self._lock, self._conn:
            return self._conn.execute(
                "UPDATE jobs SET status=?, error=?, finished=? WHERE status IN (?, ?)",
                (JobStatus.INTERRUPTED.value, reason, time.time(), *self._LIVE)).rowcount

    def get(self, task_id: str) -> HistoryEntry | None:
        with self._lock:
            row = self._conn.execute(f"SELECT {self._COLUMNS} FROM jobs WHERE id = ?",
                                     (valid_text(task_id),)).fetchone()
        return None if row is None else self._entry(row)

    def list(self, *, limit: int, offset: int, kind: str | None) -> list[HistoryEntry]:
        where, args = ("WHERE kind = ?", [valid_text(kind)]) if kind is not None else ("", [])
        query = (f"SELECT {self._COLUMNS} FROM jobs {where} "
                 f"ORDER BY finished IS NULL DESC, finished DESC, rowid DESC LIMIT ? OFFSET ?")
        with self._lock:
            rows = self._conn.execute(query, [*args, limit, offset]).fetchall()
        return [self._entry(row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @staticmethod
    def _entry(row: tuple[Any, ...]) -> HistoryEntry:
        """A row as an entry, whatever is in it: text made valid, unreadable JSON or status reported, not raised."""
        id_, kind, params, status, error, infotext, files = (_row_text(v) for v in row[:7])
        created, started, finished = row[7:]
        problems = []
        try:
            params = json.loads(params)
            if not isinstance(params, dict):
                raise ValueError("not an object")
        except (TypeError, ValueError):
            problems.append("its request parameters are unreadable")
            params = {}
        try:
            files = [str(f) for f in json.loads(files)]
        except (TypeError, ValueError):
            problems.append("its file list is unreadable")
            files = []
        try:
            status = JobStatus(status)
        except ValueError:
            problems.append(f"unknown status {status!r}")
            status = JobStatus.FAILED
        if problems:
            error = "; ".join(filter(None, [error, *(f"history row: {p}" for p in problems)]))
        number = lambda v: v if isinstance(v, (int, float)) else None  # noqa: E731
        return HistoryEntry(id=id_ or "", kind=kind or "", params=valid_text(params), status=status, error=error,
                            infotext=infotext or "", files=valid_text(files), created=number(created) or 0.0,
                            started=number(started), finished=number(finished))


def _row_text(value: Any) -> str | None:
    """A text column as valid text, whatever an old version or a hand edit stored there (bytes, numbers)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return valid_text(str(value))
