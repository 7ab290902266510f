"""A1111's ``shared.state``: one stable object that always is the running job's progress.

The app gives every job its own ``JobState`` (``modules.progress``); ``Runtime.run`` makes the running one
``runtime.state``. Extensions keep the object they imported (``from modules.shared import state``), so ``StateProxy``
forwards every read and write to the job state of the moment: ``state.interrupt()``, ``state.job_count = n`` or
``state.skipped`` reach the job that runs. A1111's names that ``JobState`` lacks are added here.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from modules.progress import JobState


class StateProxy:
    def __init__(self, resolve: Callable[[], JobState]) -> None:
        object.__setattr__(self, "_resolve", resolve)
        object.__setattr__(self, "server_start", time.time())

    def current(self) -> JobState:
        return self._resolve()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        job = self.current()
        try:
            return getattr(job, name)
        except AttributeError:
            pass
        if name in _A1111_DEFAULTS:               # A1111-only fields, kept on the job state once set
            return _A1111_DEFAULTS[name]
        from modules.a1111.missing import attribute_error

        raise attribute_error("modules.shared.state", name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.current(), name, value)

    def __repr__(self) -> str:
        return f"<shared.state of {self.current()!r}>"

    # -- A1111 names -------------------------------------------------------------------------------------------------
    def nextjob(self) -> None:
        self.current().next_job()

    def stop_generating(self) -> None:
        """Finish the image being made, then stop."""
        self.current().stopping_generation = True

    def begin(self, job: str = "(unknown)", job_count: int = 1) -> None:
        state = self.current()
        state.begin(job, job_count)
        state.stopping_generation = False
        state.job_timestamp = time.strftime("%Y%m%d%H%M%S")

    def set_current_image(self, image: Any = None) -> None:
        """With an image: make it the live preview. Without: A1111 decodes ``current_latent`` here; the app's
        sampling loop makes its previews itself, so there is nothing to do."""
        if image is not None:
            self.current().set_current_image(image)

    def assign_current_image(self, image: Any) -> None:
        self.current().set_current_image(image)

    do_set_current_image = set_current_image

    def dict(self) -> dict[str, Any]:
        state = self.current()
        return {"skipped": state.skipped, "interrupted": state.interrupted,
                "stopping_generation": self.stopping_generation, "job": state.job, "job_count": state.job_count,
                "job_timestamp": self.job_timestamp, "job_no": state.job_no, "sampling_step": state.sampling_step,
                "sampling_steps": state.sampling_steps}


_A1111_DEFAULTS: dict[str, Any] = {
    "stopping_generation": False,
    "job_timestamp": "0",
    "current_latent": None,
    "need_restart": False,
    "server_command": None,
    "processing_has_refined_job_count": False,
}
