"""A1111's settings as this web UI knows them: the section of each setting, and the A1111 settings it does not have.

Every A1111 (v1.10) setting name falls in one of three groups:

- a field of ``modules.options.Options``: the setting exists here and has its effect; ``SECTIONS`` says where the
  Settings tab shows it (A1111's sections, in A1111's order; the app's own settings in sections of their own);
- ``FIXED``: the behaviour exists but cannot be changed here; the option is known (``GET /options`` lists it) and
  accepts only the value that describes what this web UI does, so a client that reads the options and writes them
  back works; any other value is refused with the reason;
- ``REFUSED``: the feature does not exist in this web UI; setting it is refused with the reason (never stored, never
  shown in the Settings tab).

A name in none of them is not a setting at all ("unknown option").
"""
from __future__ import annotations

from typing import Any

# (section id, title, option keys) in the order the Settings tab shows them. A1111's section ids.
SECTIONS: list[tuple[str, str, list[str]]] = [
    ("saving-images", "Saving images/grids", [
        "samples_save", "samples_format", "samples_filename_pattern", "save_images_add_number", "grid_save",
        "grid_format", "grid_extended_filename", "grid_only_if_multiple", "n_rows", "jpeg_quality", "webp_lossless",
        "export_for_4chan", "img_downscale_threshold", "target_side_length"]),
    ("saving-paths", "Paths for saving", [
        "outdir_samples", "outdir_txt2img_samples", "outdir_img2img_samples", "outdir_extras_samples", "outdir_grids",
        "outdir_txt2img_grids", "outdir_img2img_grids"]),
    ("saving-to-dirs", "Saving to a directory", [
        "save_to_dirs", "grid_save_to_dirs", "directories_filename_pattern", "directories_max_prompt_words"]),
    ("upscaling", "Upscaling", ["ESRGAN_tile", "ESRGAN_tile_overlap"]),
    ("system", "System", ["samples_log_stdout", "batch_compatible_jobs"]),
    ("sd", "Stable Diffusion", [
        "sd_model_checkpoint", "sd_checkpoints_limit", "CLIP_stop_at_last_layers", "emphasis", "randn_source",
        "tiling"]),
    ("vae", "VAE", ["sd_vae"]),
    ("img2img", "img2img", [
        "initial_noise_multiplier", "img2img_extra_noise", "img2img_color_correction", "img2img_fix_steps",
        "img2img_background_color", "overlay_inpaint"]),
    ("compatibility", "Compatibility", ["use_old_scheduling"]),
    ("extra_networks", "Extra Networks", ["extra_networks_default_multiplier", "extra_networks_add_text_separator"]),
    ("ui_prompt_editing", "Prompt editing", [
        "keyedit_precision_attention", "keyedit_precision_extra", "keyedit_delimiters", "disable_token_counters"]),
    ("ui_gallery", "Gallery", ["return_grid", "do_not_show_images"]),
    ("ui", "User interface", [
        "localization", "quicksettings_list", "hidden_tabs", "send_seed", "send_size", "interrupt_after_current"]),
    ("infotext", "Infotext", [
        "enable_pnginfo", "save_txt", "add_model_name_to_info", "add_model_hash_to_info", "add_vae_name_to_info",
        "add_vae_hash_to_info", "add_version_to_infotext"]),
    ("live-previews", "Live previews", [
        "show_progressbar", "live_previews_enable", "show_progress_every_n_steps", "show_progress_type"]),
    ("sampler-params", "Sampler parameters", [
        "hide_samplers", "eta_ddim", "eta_ancestral", "s_churn", "s_tmin", "s_tmax", "s_noise",
        "eta_noise_seed_delta", "sd_noise_schedule"]),
    # the app's own
    ("limits", "Limits (this web UI)", [
        "limit_max_pixels", "limit_images_per_job", "limit_init_images", "limit_input_pixels", "limit_prompt_tokens",
        "limit_and_parts"]),
]

# Options that exist but are not shown in the Settings tab (they have their own control elsewhere).
NOT_IN_SETTINGS_TAB = {"sd_model_checkpoint", "disabled_extensions", "randn_source"}

# Options that shape the page as it is built: they take effect when the app is restarted.
NEEDS_RESTART = {"hidden_tabs", "hide_samplers", "disable_token_counters", "quicksettings_list", "localization"}

_CPU = "this web UI runs on the CPU, where every loaded model is kept in RAM"
_OLD = "this web UI has only A1111's current behaviour, not the old one"

# key -> (the only value accepted, why)
FIXED: dict[str, tuple[Any, str]] = {
    "hires_fix_show_sampler": (True, "the hires sampler and schedule are always in the hires fix's sub-accordion"),
    "hires_fix_show_prompts": (True, "the hires prompts are always in the hires fix's sub-accordion"),
    "sd_checkpoint_cache": (0, "checkpoints kept in memory are set by sd_checkpoints_limit (obsolete in A1111 too)"),
    "sd_checkpoints_keep_in_cpu": (True, _CPU),
    "sd_vae_checkpoint_cache": (0, "VAE files are loaded when selected, not cached"),
    "enable_batch_seeds": (True, "every image of a batch gets noise from its own seed, as when made alone"),
    "comma_padding_backtrack": (20, "the prompt word wrap limit is fixed at A1111's default of 20 tokens"),
    "api_enable_requests": (False, "input images given as URLs are refused: the server fetches nothing"),
    "save_incomplete_images": (False, "an interrupted, half-finished image is never saved here"),
    "face_restoration": (False, "there is no face restoration in this web UI"),
    "token_merging_ratio": (0.0, "there is no token merging (ToMe) in this web UI"),
    "token_merging_ratio_img2img": (0.0, "there is no token merging (ToMe) in this web UI"),
    "token_merging_ratio_hr": (0.0, "there is no token merging (ToMe) in this web UI"),
    "s_min_uncond": (0.0, "the negative prompt is never skipped in late steps here"),
    "sgm_noise_multiplier": (False, "the initial noise is never rescaled the SGM way here"),
    "always_discard_next_to_last_sigma": (False, "sigma schedules come whole from the sampler's schedule type"),
    "k_sched_type": ("Automatic", "the schedule is chosen per job with the Schedule type field"),
    "sigma_min": (0.0, "the schedule's sigma range is the model's own"),
    "sigma_max": (0.0, "the schedule's sigma range is the model's own"),
    "rho": (0.0, "the schedule's rho is the schedule type's default"),
    "use_old_emphasis_implementation": (False, _OLD),
    "use_old_karras_scheduler_sigmas": (False, _OLD),
    "no_dpmpp_sde_batch_determinism": (False, _OLD),
    "use_old_hires_fix_width_height": (False, _OLD),
    "dont_fix_second_order_samplers_schedule": (False, _OLD),
    "hires_fix_use_firstpass_conds": (False, _OLD),
    "sd_unet": ("None", "separate UNet files are not supported: the UNet is the checkpoint's"),
}

_R_FACES = "there is no face restoration in this web UI"
_R_INTERROGATE = "there is no interrogate (CLIP/DeepBooru captioning) in this web UI"
_R_LIGHTBOX = "there is no full-page image viewer in this web UI (the gallery's own preview is used)"
_R_HN = "hypernetworks are not supported by this web UI"
_R_CONSOLE = "console output of this web UI is its log; there is no such switch"
_R_SAVE_BUTTON = "there is no Save button in the gallery of this web UI"
_R_TB = "training logs no tensorboard events in this web UI"
_R_LAYOUT = "the layout of the txt2img/img2img tabs is fixed in this web UI"
_R_GRID_TEXT = "grid label colours and font are fixed in this web UI"
_R_NOTIFY = "there is no notification sound in this web UI"
_R_POSTPROC = "postprocessing runs in the Extras tab only, in a fixed order"

# key -> why it does not exist here
REFUSED: dict[str, str] = {
    # Saving images/grids
    "save_images_replace_action": "files are never overwritten here: a taken name gets the next number",
    "grid_prevent_empty_spots": "grid rows are set with n_rows only",
    "grid_zip_filename_pattern": "there is no Zip download in this web UI",
    "font": _R_GRID_TEXT, "grid_text_active_color": _R_GRID_TEXT, "grid_text_inactive_color": _R_GRID_TEXT,
    "grid_background_color": _R_GRID_TEXT,
    "save_images_before_face_restoration": _R_FACES,
    "save_images_before_highres_fix": "copies before the hires pass are not saved in this web UI",
    "save_images_before_color_correction": "copies before color correction are not saved in this web UI",
    "save_mask": "inpainting masks are not saved separately in this web UI",
    "save_mask_composite": "inpainting masks are not saved separately in this web UI",
    "img_max_size_mp": "image sizes are limited by the limit_* settings of this web UI (limit_max_pixels)",
    "use_original_name_batch": "Extras output names are not configurable in this web UI",
    "use_upscaler_name_as_suffix": "Extras output names are not configurable in this web UI",
    "save_selected_only": _R_SAVE_BUTTON, "outdir_save": _R_SAVE_BUTTON, "use_save_to_dirs_for_ui": _R_SAVE_BUTTON,
    "save_init_img": "img2img does not save its init images in this web UI",
    "outdir_init_images": "img2img does not save its init images in this web UI",
    "temp_dir": "this web UI keeps no temporary image folder of its own",
    "clean_temp_dir_at_start": "this web UI keeps no temporary image folder of its own",
    "notification_audio": _R_NOTIFY, "notification_volume": _R_NOTIFY,
    "save_write_log_csv": "generations are recorded in the job history (SQLite), not in log.csv",
    # Upscaling
    "realesrgan_enabled_models": "every upscaler model file in the models folders is offered; there is no list",
    "upscaler_for_img2img": "the img2img resize upscaler is not configurable in this web UI",
    "set_scale_by_when_changing_upscaler": "the Extras tab keeps its scale when the upscaler changes",
    # Face restoration
    "face_restoration_model": _R_FACES, "code_former_weight": _R_FACES, "face_restoration_unload": _R_FACES,
    # System
    "auto_launch_browser": "this web UI never opens a browser by itself",
    "enable_console_prompts": _R_CONSOLE, "show_warnings": _R_CONSOLE, "show_gradio_deprecation_warnings": _R_CONSOLE,
    "multiple_tqdm": _R_CONSOLE, "hide_ldm_prints": _R_CONSOLE, "dump_stacks_on_signal": _R_CONSOLE,
    "memmon_poll_rate": "there is no VRAM monitor: this web UI runs on the CPU",
    "print_hypernet_extra": _R_HN,
    "list_hidden_files": "which model folders are searched is not configurable in this web UI",
    "disable_mmap_load_safetensors": ".safetensors files are always memory-mapped in this web UI",
    "prevent_screen_sleep_during_generation": "the page does not hold the screen awake in this web UI",
    # API
    "api_forbid_local_requests": "input images given as URLs are refused: the server fetches nothing",
    "api_useragent": "input images given as URLs are refused: the server fetches nothing",
    # Training
    "unload_models_when_training": _CPU, "pin_memory": _CPU,
    "save_optimizer_state": "training does not save optimizer state in this web UI",
    "save_training_settings_to_txt": "training does not write its settings to a text file in this web UI",
    "dataset_filename_word_regex": "training caption rules are not configurable in this web UI",
    "dataset_filename_join_string": "training caption rules are not configurable in this web UI",
    "training_image_repeats_per_epoch": "training counts steps, not epochs, in this web UI",
    "training_write_csv_every": "training reports its loss in the Train tab, not in a CSV file",
    "training_xattention_optimizations": _CPU,
    "training_enable_tensorboard": _R_TB, "training_tensorboard_save_images": _R_TB,
    "training_tensorboard_flush_every": _R_TB,
    # Stable Diffusion
    "enable_quantization": "k-diffusion quantization does not apply to this web UI's diffusers samplers",
    "enable_emphasis": "replaced in A1111 1.8 by emphasis, which this web UI has",
    "upcast_attn": "attention is always computed in float32 on the CPU",
    "hires_fix_refiner_pass": "there is no SDXL refiner pass in this web UI",
    "sdxl_crop_top": "SDXL crop conditioning is fixed at 0 in this web UI",
    "sdxl_crop_left": "SDXL crop conditioning is fixed at 0 in this web UI",
    "sdxl_refiner_low_aesthetic_score": "there is no SDXL refiner pass in this web UI",
    "sdxl_refiner_high_aesthetic_score": "there is no SDXL refiner pass in this web UI",
    "sd_vae_overrides_per_model_preferences": "there are no per-model VAE preferences in this web UI",
    "auto_vae_precision": "the VAE always runs in float32 on the CPU",
    "auto_vae_precision_bfloat16": "the VAE always runs in float32 on the CPU",
    "sd_vae_encode_method": "images are always encoded with the full VAE in this web UI",
    "sd_vae_decode_method": "images are always decoded with the full VAE in this web UI (TAESD is for live previews)",
    "enable_prompt_comments": "prompt comments (# lines) are not stripped in this web UI",
    "auto_backcompat": _OLD, "use_downcasted_alpha_bar": _OLD, "refiner_switch_by_sample_steps": _OLD,
    "beta_dist_alpha": "the Beta schedule's parameters are fixed in this web UI",
    "beta_dist_beta": "the Beta schedule's parameters are fixed in this web UI",
    # img2img
    "inpainting_mask_weight": "the conditioning mask strength of inpainting models is fixed at 1 in this web UI",
    "img2img_editor_height": "the image editor's height is fixed in this web UI",
    "img2img_sketch_default_brush_color": "there is no Sketch tab in this web UI",
    "img2img_inpaint_mask_brush_color": "the inpaint brush colour is fixed in this web UI",
    "img2img_inpaint_sketch_default_brush_color": "there is no Inpaint sketch tab in this web UI",
    "return_mask": "inpainting masks are not returned in this web UI",
    "return_mask_composite": "inpainting masks are not returned in this web UI",
    "img2img_batch_show_results_limit": "there is no img2img Batch tab in this web UI",
    "img2img_batch_use_original_name": "there is no img2img Batch tab in this web UI",
    # Optimizations
    "cross_attention_optimization": "attention runs through PyTorch's scaled dot-product attention (diffusers)",
    "pad_cond_uncond": "prompt and negative prompt are not padded to the same length here",
    "pad_cond_uncond_v0": "prompt and negative prompt are not padded to the same length here",
    "persistent_cond_cache": "prompts are encoded once per job in this web UI",
    "batch_cond_uncond": "prompt and negative prompt are always denoised in one batch here",
    "fp8_storage": _CPU, "cache_fp16_weight": _CPU,
    # Interrogate
    "interrogate_keep_models_in_memory": _R_INTERROGATE, "interrogate_return_ranks": _R_INTERROGATE,
    "interrogate_clip_num_beams": _R_INTERROGATE, "interrogate_clip_min_length": _R_INTERROGATE,
    "interrogate_clip_max_length": _R_INTERROGATE, "interrogate_clip_dict_limit": _R_INTERROGATE,
    "interrogate_clip_skip_categories": _R_INTERROGATE, "interrogate_deepbooru_score_threshold": _R_INTERROGATE,
    "deepbooru_sort_alpha": _R_INTERROGATE, "deepbooru_use_spaces": _R_INTERROGATE, "deepbooru_escape": _R_INTERROGATE,
    "deepbooru_filter_tags": _R_INTERROGATE,
    # Extra networks
    "sd_hypernetwork": _R_HN,
    "textual_inversion_print_at_load": "the embeddings are listed by /sdapi/v1/embeddings, not printed",
    "textual_inversion_add_hashes_to_infotext": "embedding hashes are not written to the infotext here",
    # User interface
    "gradio_theme": "the page uses Gradio's default theme (themes come from the network)",
    "gradio_themes_cache": "the page uses Gradio's default theme (themes come from the network)",
    "ui_tab_order": "the order of the top tabs is fixed in this web UI (hide tabs with hidden_tabs)",
    "ui_reorder_list": _R_LAYOUT, "compact_prompt_box": _R_LAYOUT, "samplers_in_dropdown": _R_LAYOUT,
    "dimensions_and_batch_together": _R_LAYOUT, "txt2img_settings_accordion": _R_LAYOUT,
    "img2img_settings_accordion": _R_LAYOUT,
    "sd_checkpoint_dropdown_use_short": "the checkpoint dropdown always shows A1111's titles",
    "show_progress_in_title": "the page's title does not show progress in this web UI",
    "gallery_height": "the gallery sizes itself to the image in this web UI",
    "keyedit_move": "Alt+left/right does not move prompt parts in this web UI",
    "keyedit_delimiters_whitespace": "the Ctrl+up/down word delimiters are set with keyedit_delimiters only",
    "js_modal_lightbox": _R_LIGHTBOX, "js_modal_lightbox_initially_zoomed": _R_LIGHTBOX,
    "js_modal_lightbox_gamepad": _R_LIGHTBOX, "js_modal_lightbox_gamepad_repeat": _R_LIGHTBOX,
    "js_live_preview_in_modal_lightbox": _R_LIGHTBOX,
    # Infotext
    "add_user_name_to_info": "the user name is never written to the infotext here",
    "disable_weights_auto_swap": "pasted infotext never switches the checkpoint in this web UI",
    "infotext_skip_pasting": "pasting infotext fills a fixed set of fields in this web UI",
    "infotext_styles": "styles are not inferred from pasted infotext in this web UI",
    # Live previews
    "live_previews_image_format": "live previews are always sent as PNG",
    "show_progress_grid": "the live preview shows the first image of the batch",
    "live_preview_allow_lowvram_full": _CPU,
    "live_preview_content": "the live preview shows the denoised picture of the prompt only",
    "live_preview_refresh_period": "the page polls progress at a fixed period in this web UI",
    "live_preview_fast_interrupt": "an interrupted image is dropped, not previewed, in this web UI",
    # Sampler parameters
    "ddim_discretize": "img2img with DDIM uses the scheduler's own timestep spacing",
    "uni_pc_variant": "UniPC runs with diffusers' defaults in this web UI",
    "uni_pc_skip_type": "UniPC runs with diffusers' defaults in this web UI",
    "uni_pc_order": "UniPC runs with diffusers' defaults in this web UI",
    "uni_pc_lower_order_final": "UniPC runs with diffusers' defaults in this web UI",
    # Postprocessing
    "postprocessing_enable_in_main_ui": _R_POSTPROC, "postprocessing_operation_order": _R_POSTPROC,
    "upscaling_max_images_in_cache": "upscaled images are not cached in this web UI",
    "postprocessing_existing_caption_action": "the Extras tab makes no captions in this web UI",
    # hidden options
    "disable_all_extensions": "use --disable-all-extensions or the Extensions tab",
    "restore_config_state_file": "there are no config states (backup/restore) in this web UI",
    "sd_checkpoint_hash": "the current checkpoint's hash is in GET /sdapi/v1/sd-models",
}


def section_of(key: str) -> tuple[str, str] | None:
    for section_id, title, keys in SECTIONS:
        if key in keys:
            return section_id, title
    return None


def refusal(key: str, value: Any) -> str | None:
    """Why setting ``key`` to ``value`` is refused, for an A1111 setting this web UI does not have (None: not such)."""
    if key in FIXED:
        fixed, why = FIXED[key]
        if value == fixed and isinstance(value, bool) == isinstance(fixed, bool):
            return None
        return (f"option {key!r} can only be {fixed!r} in this web UI: {why}")
    if key in REFUSED:
        return f"option {key!r} is an A1111 setting whose feature does not exist in this web UI: {REFUSED[key]}"
    return None


def fixed_values() -> dict[str, Any]:
    return {key: value for key, (value, _) in FIXED.items()}
