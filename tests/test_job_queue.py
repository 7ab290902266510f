"""JobQueue: ordering on one worker, ids, cancel / interrupt / skip, progress, and the SQLite history."""
from __future__ import annotations

import re
import threading
from concurrent.futures import CancelledError

import pytest
from PIL import Image

from modules.job_queue import (JobCancelled, JobOutput, JobQueue, JobStatus, QueueFull, new_task_id)
from modules.progress import JobState

TIMEOUT = 10


@pytest.fixture
def queue(tmp_path):
    q = JobQueue(tmp_path / "history.sqlite3", max_pending=5)
    yield q
    q.close()


def blocker() -> tuple[threading.Event, threading.Event, object]:
    """A job function that signals it started and then waits until released (or interrupted)."""
    started, release = threading.Event(), threading.Event()

    def fn(state: JobState) -> JobOutput:
        started.set()
        while not release.wait(0.01):
            if state.interrupted:
                break
        return JobOutput(value="blocked", infotext="blocker")

    return started, release, fn


def test_task_ids_follow_a1111_layout():
    assert re.fullmatch(r"task\(txt2img-[A-Z0-9]{7}\)", new_task_id("txt2img"))
    assert new_task_id("x") != new_task_id("x")


def test_jobs_run_in_submission_order_on_one_thread(queue):
    order, threads = [], set()

    def make(i):
        def fn(state):
            order.append(i)
            threads.add(threading.get_ident())
            return JobOutput(value=i)
        return fn

    jobs = [queue.submit("t", {"i": i}, make(i)) for i in range(5)]
    assert [queue.wait(j, TIMEOUT).value for j in jobs] == list(range(5))
    assert order == list(range(5))
    assert len(threads) == 1 and threading.get_ident() not in threads


def test_force_task_id_is_used_and_a_live_duplicate_is_refused(queue):
    started, release, fn = blocker()
    job = queue.submit("t", {}, fn, task_id="task(mine)")
    assert job.id == "task(mine)"
    with pytest.raises(ValueError, match="already queued or running"):
        queue.submit("t", {}, fn, task_id="task(mine)")
    release.set()
    queue.wait(job, TIMEOUT)


def test_status_calls_answer_while_a_job_runs_and_pending_can_be_cancelled(queue):
    started, release, fn = blocker()
    running = queue.submit("t", {}, fn)
    assert started.wait(TIMEOUT)
    waiting = [queue.submit("t", {"n": n}, lambda s: JobOutput()) for n in range(3)]
    # The running job is held until released, so each of these calls would hang if it waited for the job.
    assert queue.current is running
    assert [j.id for j in queue.pending()] == [j.id for j in waiting]
    assert queue.progress(running.id).active
    second = queue.progress(waiting[1].id)
    assert second.queued and second.queue_position == 1 and second.status is JobStatus.QUEUED
    cancelled = queue.cancel(waiting[1].id)
    assert cancelled.status is JobStatus.CANCELLED
    with pytest.raises(JobCancelled):
        cancelled.result(TIMEOUT)
    with pytest.raises(KeyError):
        queue.cancel("task(nope)")
    release.set()
    for job in (running, waiting[0], waiting[2]):
        queue.wait(job, TIMEOUT)
    assert queue.history_entry(waiting[1].id).status is JobStatus.CANCELLED


def test_queue_length_is_bounded_and_the_error_says_so(queue):
    started, release, fn = blocker()
    queue.submit("t", {}, fn)
    assert started.wait(TIMEOUT)
    for _ in range(queue.max_pending):
        queue.submit("t", {}, lambda s: JobOutput())
    with pytest.raises(QueueFull, match="5 jobs"):
        queue.submit("t", {}, lambda s: JobOutput())
    release.set()


def test_interrupt_and_skip_reach_only_the_running_job(queue):
    started, release, fn = blocker()
    running = queue.submit("t", {}, fn)
    assert started.wait(TIMEOUT)
    later = queue.submit("t", {}, lambda s: JobOutput(value=(s.interrupted, s.skipped)))
    assert queue.skip("task(other)") is None
    assert queue.skip() is running and running.state.skipped
    assert queue.interrupt() is running
    assert queue.wait(running, TIMEOUT).value == "blocked"
    assert running.status is JobStatus.INTERRUPTED
    assert queue.wait(later, TIMEOUT).value == (False, False)
    assert later.status is JobStatus.DONE
    assert queue.interrupt() is None  # nothing running


def test_cancel_of_the_running_job_interrupts_it(queue):
    started, release, fn = blocker()
    job = queue.submit("t", {}, fn)
    assert started.wait(TIMEOUT)
    assert queue.cancel(job.id) is job
    queue.wait(job, TIMEOUT)
    assert job.status is JobStatus.INTERRUPTED


def test_a_failing_job_is_recorded_and_the_worker_carries_on(queue):
    def boom(state):
        raise RuntimeError("kaboom")

    bad = queue.submit("t", {}, boom)
    wrong_type = queue.submit("t", {}, lambda s: "not a JobOutput")
    good = queue.submit("t", {}, lambda s: JobOutput(value=42))
    with pytest.raises(RuntimeError, match="kaboom"):
        queue.wait(bad, TIMEOUT)
    with pytest.raises(TypeError, match="JobOutput"):
        queue.wait(wrong_type, TIMEOUT)
    assert queue.wait(good, TIMEOUT).value == 42
    entry = queue.history_entry(bad.id)
    assert entry.status is JobStatus.FAILED and entry.error == "RuntimeError: kaboom"
    assert queue.progress(bad.id).completed


def test_a_future_cancelled_while_waiting_is_skipped(queue):
    started, release, fn = blocker()
    queue.submit("t", {}, fn)
    assert started.wait(TIMEOUT)
    ran = threading.Event()
    job = queue.submit("t", {}, lambda s: (ran.set(), JobOutput())[1])
    assert job.future.cancel()
    release.set()
    after = queue.submit("t", {}, lambda s: JobOutput())
    queue.wait(after, TIMEOUT)
    with pytest.raises(CancelledError):
        job.result(0)
    assert not ran.is_set()
    assert queue.history_entry(job.id).status is JobStatus.CANCELLED


def test_progress_reports_fraction_eta_and_live_preview(queue):
    step, release = threading.Event(), threading.Event()

    def fn(state):
        state.job_count, state.sampling_steps, state.sampling_step = 1, 4, 2
        state.textinfo = "sampling"
        state.set_current_image(Image.new("RGB", (8, 8), "red"))
        step.set()
        release.wait(TIMEOUT)
        return JobOutput()

    job = queue.submit("t", {}, fn)
    assert step.wait(TIMEOUT)
    p = queue.progress(job.id, live_preview=True)
    assert p.active and p.progress == pytest.approx(0.5) and p.eta is not None and p.textinfo == "sampling"
    assert p.live_preview.startswith("data:image/png;base64,") and p.id_live_preview == job.state.id_live_preview
    unchanged = queue.progress(job.id, live_preview=True, id_live_preview=p.id_live_preview)
    assert unchanged.live_preview is None
    release.set()
    queue.wait(job, TIMEOUT)
    done = queue.progress(job.id)
    assert done.completed and not done.active and done.status is JobStatus.DONE
    unknown = queue.progress("task(unknown)")
    assert not (unknown.active or unknown.queued or unknown.completed) and unknown.status is None


def test_history_survives_a_new_queue_on_the_same_db(tmp_path):
    db = tmp_path / "data" / "history.sqlite3"
    first = JobQueue(db)
    done = first.submit("txt2img", {"prompt": "a cat", "steps": 2},
                        lambda s: JobOutput(value=1, infotext="a cat\nSteps: 2", files=["/out/1.png"]))
    interrupted = first.submit("img2img", {}, lambda s: (s.interrupt(), JobOutput())[1])
    failed = first.submit("txt2img", {}, lambda s: 1 / 0)
    first.wait(done, TIMEOUT)
    first.wait(interrupted, TIMEOUT)
    with pytest.raises(ZeroDivisionError):
        first.wait(failed, TIMEOUT)
    first.close()

    second = JobQueue(db)
    try:
        entries = second.history()
        assert [e.id for e in entries] == [failed.id, interrupted.id, done.id]  # newest first
        entry = second.history_entry(done.id)
        assert entry.kind == "txt2img" and entry.params == {"prompt": "a cat", "steps": 2}
        assert entry.status is JobStatus.DONE and entry.infotext == "a cat\nSteps: 2" and entry.files == ["/out/1.png"]
        assert entry.created <= entry.started <= entry.finished and entry.duration >= 0
        assert second.history_entry(interrupted.id).status is JobStatus.INTERRUPTED
        assert "ZeroDivisionError" in second.history_entry(failed.id).error
        assert [e.id for e in second.history(kind="img2img")] == [interrupted.id]
        assert [e.id for e in second.history(limit=1, offset=1)] == [interrupted.id]
        assert second.progress(done.id).completed
    finally:
        second.close()


def test_close_cancels_pending_jobs_and_interrupts_the_running_one(tmp_path):
    q = JobQueue(tmp_path / "h.sqlite3")
    started, release, fn = blocker()
    running = q.submit("t", {}, fn)
    assert started.wait(TIMEOUT)
    pending = q.submit("t", {}, lambda s: JobOutput())
    q.close()
    assert running.status is JobStatus.INTERRUPTED
    with pytest.raises(JobCancelled, match="shutting down"):
        pending.result(TIMEOUT)
    with pytest.raises(RuntimeError, match="shut down"):
        q.submit("t", {}, lambda s: JobOutput())


def test_params_must_be_json(queue):
    with pytest.raises(TypeError):
        queue.submit("t", {"image": object()}, lambda s: JobOutput())


# -- reliability: the worker cannot die, every job has its row from the start, a crash leaves a readable history -----
@pytest.mark.parametrize("raised", [SystemExit(3), KeyboardInterrupt(), UnicodeEncodeError("utf-8", "\ud800", 0, 1,
                                                                                            "surrogates not allowed")])
def test_whatever_a_job_raises_is_its_failure_and_the_worker_runs_the_next(queue, raised):
    def bad(state):
        raise raised

    job = queue.submit("t", {"prompt": "a\ud800b"}, bad, task_id="task(bad-\ud800)")
    with pytest.raises(Exception) as info:  # never SystemExit / KeyboardInterrupt in the caller
        queue.wait(job, TIMEOUT)
    assert type(raised).__name__ in str(info.value) or info.value is raised
    assert queue.submit("t", {}, lambda s: JobOutput(value="next")).result(TIMEOUT).value == "next"
    assert queue.worker_alive
    entry = queue.history_entry("task(bad-\ud800)")
    assert entry.status is JobStatus.FAILED and type(raised).__name__ in entry.error
    assert entry.params == {"prompt": "a\ufffdb"}  # stored as valid UTF-8
    assert [e.status for e in queue.history()] == [JobStatus.DONE, JobStatus.FAILED]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_worker_is_restarted_by_the_watchdog(tmp_path, monkeypatch):
    real_next, calls = JobQueue._next_job, []

    def dies_once(self):
        calls.append(1)
        if len(calls) == 1:
            raise SystemExit("worker killed outside any job")
        return real_next(self)

    monkeypatch.setattr(JobQueue, "_next_job", dies_once)
    q = JobQueue(tmp_path / "h.sqlite3", watchdog_interval=0.05)
    try:
        wait_until(lambda: q.worker_restarts == 1 and q.worker_alive)
        assert q.submit("t", {}, lambda s: JobOutput(value=7)).result(TIMEOUT).value == 7
    finally:
        q.close()


def wait_until(predicate) -> None:
    for _ in range(TIMEOUT * 100):
        if predicate():
            return
        threading.Event().wait(0.01)
    raise AssertionError("timed out")


def test_jobs_have_their_row_from_the_moment_they_are_queued(queue):
    started, release, fn = blocker()
    running = queue.submit("t", {"n": 1}, fn)
    assert started.wait(TIMEOUT)
    waiting = queue.submit("t", {"n": 2}, lambda s: JobOutput())
    rows = {e.id: e for e in queue.history()}
    assert rows[running.id].status is JobStatus.RUNNING and rows[running.id].finished is None
    assert rows[waiting.id].status is JobStatus.QUEUED and rows[waiting.id].params == {"n": 2}
    assert [e.id for e in queue.history()][:2] == [waiting.id, running.id]  # live jobs first, newest first
    release.set()
    queue.wait(waiting, TIMEOUT)
    assert queue.history_entry(waiting.id).status is JobStatus.DONE


def test_a_finished_task_id_cannot_be_reused(queue):
    queue.submit("t", {}, lambda s: JobOutput(infotext="first"), task_id="task(once)").result(TIMEOUT)
    with pytest.raises(ValueError, match="already used"):
        queue.submit("t", {}, lambda s: JobOutput(infotext="second"), task_id="task(once)")
    assert queue.history_entry("task(once)").infotext == "first"


def test_files_are_linked_to_the_job_as_they_are_written(queue, tmp_path):
    from modules.job_queue import note_saved_file
    seen_while_running = []

    def saves_then_fails(state):
        note_saved_file(tmp_path / "1.png")
        seen_while_running.append(queue.history_entry(job.id).files)
        raise RuntimeError("after one image")

    job = queue.submit("t", {}, saves_then_fails)
    with pytest.raises(RuntimeError):
        job.result(TIMEOUT)
    assert seen_while_running == [[str(tmp_path / "1.png")]]
    assert queue.history_entry(job.id).files == [str(tmp_path / "1.png")]
    note_saved_file(tmp_path / "outside-any-job.png")  # not on a worker: ignored


def test_rows_left_live_by_a_dead_process_are_marked_interrupted_by_restart(tmp_path):
    import shutil
    db, crashed = tmp_path / "h.sqlite3", tmp_path / "crashed.sqlite3"
    first = JobQueue(db)
    started, release, fn = blocker()
    running = first.submit("t", {}, fn)
    assert started.wait(TIMEOUT)
    waiting = first.submit("t", {}, lambda s: JobOutput())
    shutil.copy(db, crashed)  # the database as a process killed now leaves it
    release.set()
    first.close()
    second = JobQueue(crashed)
    try:
        for job in (running, waiting):
            entry = second.history_entry(job.id)
            assert entry.status is JobStatus.INTERRUPTED and entry.error == "interrupted by restart"
            progress = second.progress(job.id)
            assert progress.completed and progress.textinfo == "interrupted by restart"
    finally:
        second.close()


def test_odd_rows_are_read_without_failing_the_history(tmp_path):
    import sqlite3
    db = tmp_path / "h.sqlite3"
    JobQueue(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO jobs VALUES (?,?,?,?,?,?,?,?,?,?)",
                     ("task(old)", "txt2img", '{"prompt": "a\\ud800b"}', "weird", None, "x", "not json", 1.0, None, 2.0))
    q = JobQueue(db)
    try:
        (entry,) = q.history()
        assert entry.params == {"prompt": "a\ufffdb"} and entry.status is JobStatus.FAILED
        assert "unknown status" in entry.error and entry.files == []
        json_text = __import__("json").dumps(entry.params, ensure_ascii=False).encode("utf-8")  # encodable
        assert json_text
    finally:
        q.close()


def test_an_old_database_is_migrated(tmp_path):
    import sqlite3
    db = tmp_path / "h.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY, kind TEXT NOT NULL, params TEXT NOT NULL, status TEXT "
                     "NOT NULL, error TEXT, infotext TEXT NOT NULL, files TEXT NOT NULL, created REAL NOT NULL, "
                     "started REAL, finished REAL NOT NULL)")
        conn.execute("INSERT INTO jobs VALUES ('task(a)', 't', '{}', 'done', NULL, '', '[]', 1, 1, 2)")
    q = JobQueue(db)
    try:
        assert q.history_entry("task(a)").status is JobStatus.DONE
        assert q.submit("t", {}, lambda s: JobOutput(value=1)).result(TIMEOUT).value == 1
    finally:
        q.close()
