"""Reliability with the real generation path (tiny SD1 checkpoint, 64 px, 1-2 steps): per-request checkpoint
overrides, warnings for missing networks in ``info``, and a bounded soak of mixed valid / invalid requests."""
from __future__ import annotations

import json
import shutil

import pytest
from fastapi.testclient import TestClient

from modules.api import create_api_app
from modules.paths import Paths
from tests.test_api_live import start_runtime

API = "/sdapi/v1"
SMALL = {"width": 64, "height": 64, "steps": 1, "seed": 1}


@pytest.fixture(scope="module")
def live(tmp_path_factory, tiny_models_dir, tiny_configs_dir):
    """A real runtime over its own checkpoint folder holding ``sd1.safetensors`` and a copy ``other.safetensors``."""
    tmp_path = tmp_path_factory.mktemp("reliability-live")
    models = tmp_path / "models-data"
    ckpt_dir = Paths.from_args(data_dir=models).ckpt_dir
    ckpt_dir.mkdir(parents=True)
    source = Paths.from_args(data_dir=tiny_models_dir).ckpt_dir / "sd1.safetensors"
    shutil.copy(source, ckpt_dir / "sd1.safetensors")
    shutil.copy(source, ckpt_dir / "other.safetensors")
    runtime = start_runtime(tmp_path / "data", models, tiny_configs_dir)
    with TestClient(create_api_app(runtime)) as client:
        yield runtime, client
    runtime.queue.close()


def test_override_settings_picks_the_checkpoint_for_one_request(live):
    runtime, client = live
    assert runtime.models.current.sd_checkpoint_info.name == "sd1.safetensors"
    assert runtime.opts.sd_checkpoints_limit == 1  # so restoring unloads the override's model

    def generate(**fields) -> str:
        r = client.post(f"{API}/txt2img", json={**SMALL, **fields})
        assert r.status_code == 200, r.text
        return json.loads(r.json()["info"])["infotexts"][0]

    assert "Model: other," in generate(override_settings={"sd_model_checkpoint": "other"})
    assert runtime.models.current.sd_checkpoint_info.name == "sd1.safetensors"  # restored afterwards
    assert "Model: other," in generate(override_settings={"sd_model_checkpoint": "other.safetensors"},
                                       override_settings_restore_afterwards=False)
    assert runtime.models.current.sd_checkpoint_info.name == "other.safetensors"  # kept, as A1111 does
    assert runtime.opts.sd_model_checkpoint == runtime.models.current.sd_checkpoint_info.title
    assert "Model: other," in generate()


def test_a_missing_lora_is_a_warning_in_info(live):
    runtime, client = live
    r = client.post(f"{API}/txt2img", json={**SMALL, "prompt": "a red circle <lora:no-such-lora:1>"})
    assert r.status_code == 200, r.text
    assert "Lora not found: no-such-lora" in json.loads(r.json()["info"])["comments"]
