"""The thread count of a job follows the size of its work: one thread for small UNet calls, the maximum for large."""
from __future__ import annotations

import torch

from modules import cpu_threads
from modules.options import Options
from modules.processing import StableDiffusionProcessingTxt2Img, process_images
from modules.progress import JobState


def test_small_work_runs_on_one_thread_large_on_the_maximum(tiny_sd1_model, monkeypatch):
    monkeypatch.setattr(cpu_threads, "_maximum", None)
    cpu_threads.configure(2)
    try:
        assert cpu_threads.threads_for(tiny_sd1_model, 64, 64, 1) == 1
        monkeypatch.setattr(cpu_threads, "SMALL_WORK", cpu_threads.work_of(tiny_sd1_model, 64, 64, 1))
        assert cpu_threads.threads_for(tiny_sd1_model, 64, 64, 1) == 2         # at the threshold: large
        assert cpu_threads.threads_for(tiny_sd1_model, 32, 32, 1) == 1
        assert cpu_threads.work_of(tiny_sd1_model, 64, 64, 2) == 2 * cpu_threads.work_of(tiny_sd1_model, 64, 64, 1)
    finally:
        cpu_threads.configure(1)


def test_a_job_samples_with_the_chosen_count_and_restores_the_previous_one(tiny_sd1_model, monkeypatch):
    seen = []
    handle = tiny_sd1_model.unet.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    cpu_threads.configure(2)
    try:
        for small_work, expected in ((1e30, 1), (0, 2)):
            monkeypatch.setattr(cpu_threads, "SMALL_WORK", small_work)
            seen.clear()
            p = StableDiffusionProcessingTxt2Img(prompt="a red circle", steps=2, width=64, height=64, seed=1,
                                                 do_not_save_samples=True, do_not_save_grid=True)
            p.sd_model, p.opts, p.state = tiny_sd1_model, Options(live_previews_enable=False), JobState()
            process_images(p)
            assert seen and set(seen) == {expected}
            assert torch.get_num_threads() == before
    finally:
        handle.remove()
        cpu_threads.configure(1)
