"""Progress, interrupt and skip for the job that is running. Names follow A1111's ``shared.state``."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class JobState:
    job: str = ""
    job_no: int = 0
    job_count: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0
    textinfo: str | None = None
    current_image: Any = None          # PIL image: the latest live preview
    current_image_sampling_step: int = 0
    id_live_preview: int = 0
    time_start: float | None = None
    interrupted: bool = False
    skipped: bool = False
    stopping_generation: bool = False  # A1111: stop after the image being made ("Don't Interrupt in the middle")
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- control, callable from any thread -------------------------------------------------------------------------
    def interrupt(self) -> None:
        self.interrupted = True

    def skip(self) -> None:
        self.skipped = True

    def stop_generating(self) -> None:
        """Finish the image (batch) being made, then stop: the rest of the job is not started."""
        self.stopping_generation = True

    def interrupt_button(self, after_current: bool) -> str:
        """The Interrupt button as A1111 with ``interrupt_after_current``: with more than one image to make, the first
        press stops after the current image and a second press stops at once. Returns what will happen, in words."""
        if after_current and self.job_count > 1 and not self.stopping_generation and not self.interrupted:
            self.stop_generating()
            return "Generation will stop after this image; press Interrupt again to stop at once."
        self.interrupt()
        return "Interrupted."

    # -- driven by the generation loop -----------------------------------------------------------------------------
    def begin(self, job: str = "", job_count: int = 1) -> None:
        with self._lock:
            self.job, self.job_no, self.job_count = job, 0, job_count
            self.sampling_step = self.sampling_steps = 0
            self.interrupted = self.skipped = self.stopping_generation = False
            self.current_image, self.current_image_sampling_step, self.textinfo = None, 0, None
            self.time_start = time.time()

    def end(self) -> None:
        with self._lock:
            self.job = ""
            self.time_start = None

    def next_job(self) -> None:
        with self._lock:
            self.job_no += 1
            self.sampling_step = 0
            self.skipped = False

    def set_current_image(self, image: Any, step: int | None = None) -> None:
        with self._lock:
            self.current_image = image
            self.current_image_sampling_step = self.sampling_step if step is None else step
            self.id_live_preview += 1

    @property
    def stop_requested(self) -> bool:
        return self.interrupted or self.skipped

    # -- reading ---------------------------------------------------------------------------------------------------
    def progress(self) -> float:
        """Fraction of the whole job done, 0..1 (A1111's formula: whole batches plus the current one's steps)."""
        if self.job_count <= 0:
            return 0.0
        done = self.job_no / self.job_count
        if self.sampling_steps > 0:
            done += (1 / self.job_count) * (self.sampling_step / self.sampling_steps)
        return min(max(done, 0.0), 1.0)

    def eta(self) -> float | None:
        """Seconds left, extrapolated from the time so far; None before anything has been measured."""
        p = self.progress()
        if self.time_start is None or p <= 0:
            return None
        elapsed = time.time() - self.time_start
        return max(elapsed / p - elapsed, 0.0)
