"""Batching of compatible jobs: queued txt2img jobs that differ only in prompt, negative prompt and seed are sampled
together in one UNet batch, each image keeping its own prompt, seed and noise (so it equals its solo run within float
tolerance).

How it fits together: ``batch_key(kind, p)`` is given to ``JobQueue.submit``; the queue takes pending jobs with the
same key together (up to the ``batch_compatible_jobs`` setting) and starts each job's own function on its own thread.
Those functions reach ``Runtime.run``, which calls ``run_in_batch``: the members of a group meet in a ``_Meeting``,
one of them runs the merged job (``batch_size`` = number of members, ``prompt`` / ``seed`` / ``subseed`` given as one
list entry per image, nothing saved), and every member then saves and returns its own image with its own infotext
under its own job. Anything that could differ per job inside a batch (LoRA tags, hires fix, a selected script,
batch size or count above 1, img2img) makes a job unbatchable (key ``None``), so it runs alone exactly as before.
"""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Collection

from modules.progress import JobState

log = logging.getLogger(__name__)

PER_IMAGE_FIELDS = frozenset({"prompt", "negative_prompt", "seed", "subseed"})
ARRIVAL_WAIT_S = 2.0   # how long the members of a group wait for each other before the ones there start


def has_selected_script(p: Any) -> bool:
    """The job runs a selectable script (X/Y/Z plot, prompt matrix ...): ``script_args[0]`` names it."""
    return p.scripts is not None and bool(p.script_args) and bool(p.script_args[0])


def batch_key(kind: str, p: Any, native_size: Collection[str] = ()) -> str | None:
    """What must be equal for two jobs to share a UNet batch, or None when the job must run alone."""
    if kind != "txt2img" or getattr(p, "is_img2img", False) or p.batch_size != 1 or p.n_iter != 1:
        return None
    if getattr(p, "enable_hr", False) or has_selected_script(p) or p.attention_controllers:
        return None
    for text in (p.prompt, p.negative_prompt):
        if not isinstance(text, str) or "<" in text:   # extra networks (<lora:...>) act on the whole batch
            return None
    if isinstance(p.seed, list) or isinstance(p.subseed, list):
        return None
    shared = p.model_dump(mode="json", exclude=set(PER_IMAGE_FIELDS))
    try:
        script_args = json.dumps(list(p.script_args), sort_keys=True, default=repr)
    except (TypeError, ValueError):
        return None
    return json.dumps({"kind": kind, "p": shared, "script_args": script_args, "native_size": sorted(native_size),
                       "scripts": id(p.scripts) if p.scripts is not None else None}, sort_keys=True, default=repr)


class GroupState(JobState):
    """The state a merged batch runs with: progress written to it reaches every member's own ``JobState``; it is
    interrupted (skipped, stopping) only when every member is — one member interrupted alone still gets its image,
    recorded as interrupted."""

    _MIRRORED = frozenset({"job_no", "job_count", "sampling_step", "sampling_steps", "textinfo", "current_image",
                           "current_image_sampling_step", "id_live_preview", "worker"})
    _CONTROL = ("interrupted", "skipped", "stopping_generation")

    def __init__(self, members: list[JobState]) -> None:
        object.__setattr__(self, "members", [])
        super().__init__()
        object.__setattr__(self, "members", list(members))
        self.time_start = min((m.time_start for m in members if m.time_start), default=None)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._CONTROL:
            for member in self.members:
                setattr(member, name, value)
            return
        object.__setattr__(self, name, value)
        if name in self._MIRRORED:
            for member in self.members:
                setattr(member, name, value)

    def __getattribute__(self, name: str) -> Any:
        if name in GroupState._CONTROL:
            members = object.__getattribute__(self, "members")
            return bool(members) and all(getattr(m, name) for m in members)
        return object.__getattribute__(self, name)


@dataclass
class _Member:
    job: Any
    p: Any
    state: JobState
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None     # (image, text, merged Processed) or an exception


@dataclass
class _Meeting:
    expected: set[str]
    members: dict[str, _Member] = field(default_factory=dict)
    started: bool = False
    arrived: threading.Condition = field(default_factory=threading.Condition)


_meetings: dict[str, _Meeting] = {}
_meetings_lock = threading.Lock()


def run_in_batch(p: Any, state: JobState, execute: Callable[[Any, JobState], Any],
                 prepare: Callable[[Any, JobState], Any]) -> Any | None:
    """Run ``p`` as a member of its queue group's batch; None when it is not in a group of two or more (or came too
    late to join its group's batch): the caller then runs it alone.

    ``execute(merged_p, group_state) -> Processed`` runs the merged job (here or on a remote worker);
    ``prepare(p, state)`` attaches model and options to a member's ``p`` for its own infotext and files."""
    from modules import job_queue

    job = job_queue.current_job()
    group = getattr(job, "group", None) or []
    if job is None or len(group) < 2:
        return None
    key = group[0].id
    with _meetings_lock:
        meeting = _meetings.setdefault(key, _Meeting(expected={j.id for j in group}))
    me = _Member(job, p, state)
    with meeting.arrived:
        if meeting.started:
            return None
        meeting.members[job.id] = me
        meeting.arrived.notify_all()
        meeting.arrived.wait_for(lambda: meeting.started or set(meeting.members) == meeting.expected,
                                 timeout=ARRIVAL_WAIT_S)
        lead = not meeting.started
        meeting.started = True
        members = list(meeting.members.values())
    if lead:
        with _meetings_lock:
            _meetings.pop(key, None)
        _run_merged(members, execute, prepare)
    me.done.wait()
    if isinstance(me.result, BaseException):
        raise me.result
    return _own_processed(me, prepare)


def _run_merged(members: list[_Member], execute: Callable[[Any, JobState], Any],
                prepare: Callable[[Any, JobState], Any]) -> None:
    from modules import processing

    try:
        if len(members) == 1:
            members[0].result = execute(members[0].p, members[0].state)
            return
        for m in members:
            processing.fix_seed(m.p)
        merged = members[0].p.model_copy(update={
            "prompt": [m.p.prompt for m in members], "negative_prompt": [m.p.negative_prompt for m in members],
            "seed": [m.p.seed for m in members], "subseed": [m.p.subseed for m in members],
            "batch_size": len(members), "do_not_save_samples": True, "do_not_save_grid": True,
            "extra_generation_params": dict(members[0].p.extra_generation_params),
            "comments": dict(members[0].p.comments)})
        group_state = GroupState([m.state for m in members])
        log.info("Batching %d compatible jobs in one UNet batch: %s", len(members), [m.job.id for m in members])
        processed = execute(merged, group_state)
        for i, m in enumerate(members):
            m.result = (processed, i)
    except BaseException as e:  # noqa: BLE001 - every member fails with what the batch raised
        for m in members:
            m.result = e
    finally:
        for m in members:
            m.done.set()


def _own_processed(me: _Member, prepare: Callable[[Any, JobState], Any]) -> Any:
    """A member's own ``Processed`` (its image, its infotext, its saved file) from the merged batch's result."""
    from modules import images, processing

    result = me.result
    if not isinstance(result, tuple):   # ran alone after all
        return result
    merged, i = result
    p = me.p
    mp = merged.p
    prepare(p, me.state)
    p.opts, p.sd_model, p.width, p.height = mp.opts, mp.sd_model, mp.width, mp.height
    p.all_prompts, p.all_negative_prompts = [merged.all_prompts[i]], [merged.all_negative_prompts[i]]
    p.all_seeds, p.all_subseeds = [merged.all_seeds[i]], [merged.all_subseeds[i]]
    p.clip_skip = mp.clip_skip
    p.extra_generation_params.update(mp.extra_generation_params)
    p.main_prompt, p.main_negative_prompt = p.all_prompts[0], p.all_negative_prompts[0]
    p.prompts, p.negative_prompts, p.seeds, p.subseeds = p.all_prompts, p.all_negative_prompts, p.all_seeds, \
        p.all_subseeds
    imgs = merged.images[merged.index_of_first_image:]
    if i >= len(imgs):   # the batch was interrupted before its images were made
        return processing.Processed(p=p, images=[], seed=p.all_seeds[0], comments=merged.comments,
                                    interrupted=True, timings=merged.timings)
    image, text = imgs[i], p.infotext(0)
    files = []
    opts = p.opts
    if opts.enable_pnginfo:
        image.info["parameters"] = text
    if opts.samples_save and not p.do_not_save_samples:
        fullfn, _ = images.save_image(image, processing._outdir(p, grid=False), "", p.all_seeds[0],
                                      p.all_prompts[0], opts.samples_format, info=text, p=p, opts=opts)
        files.append(fullfn)
    return processing.Processed(p=p, images=[image], infotexts=[text], seed=p.all_seeds[0],
                                all_seeds=p.all_seeds, all_subseeds=p.all_subseeds, all_prompts=p.all_prompts,
                                all_negative_prompts=p.all_negative_prompts, comments=merged.comments,
                                interrupted=me.state.interrupted, files=files, timings=merged.timings)
