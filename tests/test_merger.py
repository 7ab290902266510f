"""Checkpoint Merger: the merged tensors are the formula's, the file is a new checkpoint that lists and loads, bad
requests are refused with nothing written."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from modules.merger import MergeError, MergeRequest, merge_checkpoints
from modules.paths import Paths
from tests.fixtures_models import build_tiny, ldm_state_dict, write_checkpoint


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, tiny_models_dir):
    data = tmp_path_factory.mktemp("merge-data")
    paths = Paths.from_args(data_dir=data)
    src = Paths.from_args(data_dir=tiny_models_dir).ckpt_dir
    paths.ckpt_dir.mkdir(parents=True)
    paths.vae_dir.mkdir(parents=True)
    a = load_file(src / "sd1.safetensors")  # with the 0-dim tensors of an EMA training checkpoint
    save_file({**a, "model_ema.decay": torch.tensor(0.9999), "model_ema.num_updates": torch.tensor(7)},
              str(paths.ckpt_dir / "a.safetensors"))
    shutil.copy(src / "sdxl.safetensors", paths.ckpt_dir / "xl.safetensors")
    write_checkpoint(build_tiny("sd1", seed=1), paths.ckpt_dir / "b.safetensors", {"note": "from b"})
    torch.save(ldm_state_dict(build_tiny("sd1", seed=2)), paths.ckpt_dir / "c.ckpt")
    (paths.ckpt_dir / "b.yaml").write_text("model:\n  params:\n    parameterization: eps\n")
    vae = {k.removeprefix("first_stage_model."): v + 1 for k, v in load_file(src / "sd1.safetensors").items()
           if k.startswith("first_stage_model.")}
    save_file(vae, str(paths.vae_dir / "plus-one.safetensors"))
    return data


@pytest.fixture(scope="module")
def manager(data_dir, make_manager):
    return make_manager(data_dir)


def _tensors(manager, name):
    path = manager.paths.ckpt_dir / name
    if path.suffix == ".ckpt":
        return torch.load(path, weights_only=True)
    return load_file(path)


def _merge(manager, **fields):
    return merge_checkpoints(manager, MergeRequest(**fields))


def test_weighted_sum_at_0_1_and_half(manager):
    a, b = _tensors(manager, "a.safetensors"), _tensors(manager, "b.safetensors")
    for m, expected in ((0.0, lambda k: a[k]), (1.0, lambda k: b[k]), (0.5, lambda k: (a[k] + b[k]) / 2)):
        result = _merge(manager, primary_model_name="a.safetensors", secondary_model_name="b", multiplier=m,
                        custom_name=f"ws-{m}")
        merged = load_file(result.path)
        assert merged.keys() == a.keys()
        floats = [k for k in a if a[k].is_floating_point() and k in b]
        assert any(not torch.equal(a[k], b[k]) for k in floats)
        for key in floats:
            torch.testing.assert_close(merged[key], expected(key), rtol=1e-6, atol=1e-6)
        kept = [k for k in a if not a[k].is_floating_point() or k not in b]  # position_ids, A's own EMA scalars
        assert "model_ema.decay" in kept and all(torch.equal(merged[k], a[k]) for k in kept)


def test_add_difference_with_a_ckpt_input(manager):
    a, b, c = (_tensors(manager, n) for n in ("a.safetensors", "b.safetensors", "c.ckpt"))
    result = _merge(manager, primary_model_name="a", secondary_model_name="b", tertiary_model_name="c",
                    interp_method="Add difference", multiplier=0.3, custom_name="addiff")
    merged = load_file(result.path)
    key = "model.diffusion_model.input_blocks.0.0.weight"
    assert not torch.equal(b[key], c[key])
    for key in (k for k in a if a[k].is_floating_point() and k in b):
        torch.testing.assert_close(merged[key], a[key] + (b[key] - c[key]) * 0.3, rtol=1e-5, atol=1e-6)


def test_result_has_new_hash_lists_and_loads_with_recipe(manager):
    from modules.sd_models import ModelManager

    a_info = manager.get_info("a")
    a_hash = manager.calculate_hash(a_info)
    result = _merge(manager, primary_model_name=a_info.title, secondary_model_name="b", multiplier=0.25,
                    save_as_half=True, bake_in_vae="plus-one.safetensors", discard_weights=r"^model_ema\.|nothing",
                    custom_name="merged-half")
    assert result.info.sha256 and result.info.sha256 != a_hash and result.info.sha256 != manager.get_info("b").sha256
    # a second manager over the same folder (as after a restart) finds it with its hash, from the hash cache
    fresh = ModelManager(manager.paths, manager.opts, configs_dirs=manager.configs_dirs)
    assert result.info.title in [c.title for c in fresh.list_checkpoints()]
    with safe_open(str(result.path), "pt") as f:
        meta = f.metadata()
        assert f.get_tensor("model.diffusion_model.out.2.weight").dtype == torch.float16
    recipe = json.loads(meta["sd_merge_recipe"])
    assert recipe["primary_model_hash"] == a_hash and recipe["multiplier"] == 0.25
    assert recipe["interp_method"] == "Weighted sum" and recipe["bake_in_vae"] == "plus-one.safetensors"
    assert set(json.loads(meta["sd_merge_models"])) == {a_hash, manager.get_info("b").sha256}
    assert meta["note"] == "from b"  # the inputs' metadata is copied
    assert (manager.paths.ckpt_dir / "merged-half.yaml").is_file()  # copy config: the yaml beside B
    merged = load_file(result.path)
    assert "model.diffusion_model.out.2.weight" in merged and not any(k.startswith("model_ema.") for k in merged)
    a = _tensors(manager, "a.safetensors")
    vae_key = "first_stage_model.decoder.conv_out.weight"
    torch.testing.assert_close(merged[vae_key], (a[vae_key] + 1).half())  # the baked VAE replaced A's
    model = manager.load(result.info.title)
    assert model.family == "sd1" and model.sd_checkpoint_info.sha256 == result.info.sha256
    torch.testing.assert_close(model.vae.decoder.conv_out.weight.float(), (a[vae_key] + 1).half().float())


def test_refusals_write_nothing(manager):
    before = sorted(p.name for p in manager.paths.ckpt_dir.iterdir())
    with pytest.raises(MergeError, match="same family.*sd1.*sdxl"):
        _merge(manager, primary_model_name="a", secondary_model_name="xl", custom_name="mixed")
    _merge(manager, primary_model_name="a", secondary_model_name="b", custom_name="taken")
    taken = (manager.paths.ckpt_dir / "taken.safetensors").read_bytes()
    with pytest.raises(MergeError, match="taken.safetensors already exists"):
        _merge(manager, primary_model_name="a", secondary_model_name="b", multiplier=0.9, custom_name="taken")
    assert (manager.paths.ckpt_dir / "taken.safetensors").read_bytes() == taken
    with pytest.raises(MergeError, match="tertiary_model_name"):
        _merge(manager, primary_model_name="a", secondary_model_name="b", interp_method="Add difference")
    with pytest.raises(MergeError, match="custom_name"):
        _merge(manager, primary_model_name="a", secondary_model_name="b", custom_name="../escape")
    with pytest.raises(MergeError, match="discard_weights"):
        _merge(manager, primary_model_name="a", secondary_model_name="b", discard_weights="(")
    from modules.progress import JobState

    interrupted = JobState()
    interrupted.interrupt()
    with pytest.raises(MergeError, match="interrupted"):
        merge_checkpoints(manager, MergeRequest(primary_model_name="a", secondary_model_name="b",
                                                custom_name="stopped"), interrupted)
    after = sorted(p.name for p in manager.paths.ckpt_dir.iterdir())
    assert after == sorted([*before, "taken.safetensors", "taken.yaml"])  # B's yaml copied
    _merge(manager, primary_model_name="a", secondary_model_name="b", multiplier=0.9, custom_name="taken",
           overwrite=True)
    assert (manager.paths.ckpt_dir / "taken.safetensors").read_bytes() != taken
    manager.load("taken")
    with pytest.raises(MergeError, match="taken.safetensors is loaded now"):  # a loaded model's file stays as it is
        _merge(manager, primary_model_name="a", secondary_model_name="b", custom_name="taken", overwrite=True)


def test_api_merge_lists_the_result_and_refuses_bad_requests(manager):
    from fastapi.testclient import TestClient

    from modules import cmd_args
    from modules.api import create_api_app
    from modules.job_queue import JobQueue
    from modules.runtime import Runtime

    args = cmd_args.parse_args(["--data-dir", str(manager.paths.data_dir), "--nowebui", "--api"])
    runtime = Runtime(args=args, paths=manager.paths, opts=manager.opts, models=manager,
                      queue=JobQueue(manager.paths.data_dir / "merge-history.db"))
    try:
        with TestClient(create_api_app(runtime)) as client:
            url = "/sdapi/v1/merge-checkpoint"
            fields = client.get("/openapi.json").json()["components"]["schemas"]["MergeRequest"]["properties"]
            assert {"primary_model_name", "interp_method", "multiplier", "bake_in_vae", "overwrite"} <= set(fields)
            r = client.post(url, json={"primary_model_name": "a", "secondary_model_name": "b", "multiplier": 0.5,
                                       "custom_name": "from-api"})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["filename"].endswith("from-api.safetensors") and body["sha256"][:10] in body["title"]
            listed = {m["title"]: m for m in client.get("/sdapi/v1/sd-models").json()}
            assert body["title"] in listed and listed[body["title"]]["sha256"] == body["sha256"]
            a, b = _tensors(manager, "a.safetensors"), _tensors(manager, "b.safetensors")
            key = "model.diffusion_model.input_blocks.0.0.weight"
            torch.testing.assert_close(load_file(body["filename"])[key], (a[key] + b[key]) / 2)

            r = client.post(url, json={"primary_model_name": "a", "secondary_model_name": "b",
                                       "custom_name": "from-api"})
            assert r.status_code == 422 and "already exists" in r.text
            r = client.post(url, json={"primary_model_name": "a", "secondary_model_name": "xl", "custom_name": "x"})
            assert r.status_code == 422 and "same family" in r.text
            r = client.post(url, json={"primary_model_name": "a", "secondary_model_name": "b", "multiplier": 2})
            assert r.status_code == 422 and "multiplier" in r.text
    finally:
        runtime.queue.close()


def test_merger_tab_merges_and_lists_the_result(manager):
    import gradio as gr

    from modules import cmd_args, ui
    from modules.job_queue import JobQueue
    from modules.runtime import Runtime

    args = cmd_args.parse_args(["--data-dir", str(manager.paths.data_dir), "--nowebui"])
    runtime = Runtime(args=args, paths=manager.paths, opts=manager.opts, models=manager,
                      queue=JobQueue(manager.paths.data_dir / "merge-ui-history.db"))
    try:
        with gr.Blocks() as demo:
            ckpt = gr.Dropdown(ui.checkpoint_choices(runtime))
            ui.merger_tab(runtime, ckpt)
        ids = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
        assert {"modelmerger_primary_model_name", "modelmerger_interp_method", "modelmerger_bake_in_vae",
                "modelmerger_merge", "modelmerger_result"} <= ids
        click = next(fn for fn in demo.fns.values() if fn.name == "do_merge")
        values = ["a.safetensors", "b.safetensors", None, "from-ui", 0.5, "Weighted sum", "safetensors", False, False,
                  "Don't", "None", "", True, True, True]
        *updates, message = click.fn(*values)
        assert "from-ui.safetensors" in message
        assert any(t.startswith("from-ui.safetensors [") for t in updates[3]["choices"])  # the checkpoint dropdown
        *_, message = click.fn(*values)
        assert "error-box" in message and "already exists" in message
        values[1] = "xl.safetensors"
        values[3] = "mixed-ui"
        *_, message = click.fn(*values)
        assert "same family" in message
    finally:
        runtime.queue.close()
