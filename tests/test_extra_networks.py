"""Extra-network tags: parsing, removal before encoding, activation/reporting, hash lists, the UI token counter."""
from __future__ import annotations

import argparse
from types import SimpleNamespace

import torch

from modules import conditioning, extra_networks
from modules.extra_networks import ExtraNetwork, ExtraNetworkParams, PromptResources
from modules.options import Options
from modules.processing import StableDiffusionProcessingTxt2Img, conds_for
from modules.progress import JobState
from modules.runtime import Runtime


def test_parse_prompt_removes_tags_and_splits_arguments():
    text, data = extra_networks.parse_prompt("a cat <lora:fluffy:0.8>, <lora:x:0.5:te=1> <hypernet:h:1>")
    assert text == "a cat ,  "
    assert [params.items for params in data["lora"]] == [["fluffy", "0.8"], ["x", "0.5", "te=1"]]
    assert data["lora"][1].positional == ["x", "0.5"] and data["lora"][1].named == {"te": "1"}
    assert data["hypernet"] == [ExtraNetworkParams(["h", "1"])]


def test_what_is_not_a_tag_stays_text():
    for prompt in ("a <cat>", "<lo-ra:x:1>", "<lora:>", "a < lora:x:1>", "(a:1.2) [b:c:0.5]"):
        assert extra_networks.parse_prompt(prompt) == (prompt, {})
    assert ExtraNetworkParams(["a=b=c"]).positional == ["a=b=c"]


def test_parse_prompts_takes_the_networks_of_the_first_prompt():
    texts, data = extra_networks.parse_prompts(["one <lora:a:1>", "two <lora:b:1>"])
    assert texts == ["one ", "two "]
    assert [params.items[0] for params in data["lora"]] == ["a"]
    assert extra_networks.parse_prompts([]) == ([], {})


def test_hash_lists_merge_and_drop_separators():
    p = SimpleNamespace(extra_generation_params={})
    extra_networks.add_hashes(p, "Lora hashes", {"a": "111111111111"})
    extra_networks.add_hashes(p, "Lora hashes", {"b:c,d": "222222222222", "a": "111111111111"})
    extra_networks.add_hashes(p, "Lora hashes", {"unreadable": None})
    assert p.extra_generation_params == {"Lora hashes": "a: 111111111111, bcd: 222222222222"}


class RecordingNetwork(ExtraNetwork):
    def __init__(self) -> None:
        super().__init__("rec")
        self.calls: list[object] = []

    def activate(self, p, params_list):
        self.calls.append([params.items for params in params_list])

    def deactivate(self, p):
        self.calls.append("deactivate")


def job(model, network: ExtraNetwork | None = None, **kw) -> StableDiffusionProcessingTxt2Img:
    p = StableDiffusionProcessingTxt2Img(steps=4, **kw)
    p.sd_model, p.opts, p.state = model, Options(), JobState()
    p.prompt_resources = PromptResources(networks={"rec": network} if network else {})
    return p


def test_conds_for_encodes_prompts_without_tags_and_activates_networks(tiny_sd1_model):
    network = RecordingNetwork()
    p = job(tiny_sd1_model, network)
    tagged, _ = conds_for(p, tiny_sd1_model, ["a cat <rec:x:1> <other:y>"], ["<rec:neg>"], 4)
    plain, _ = conds_for(p, tiny_sd1_model, ["a cat"], [""], 4)
    assert torch.equal(tagged.batch[0][0].schedules[0].cond.embeds, plain.batch[0][0].schedules[0].cond.embeds)
    assert network.calls == [[["x", "1"]], []]  # negative prompts are not parsed; no tag: activated with none
    assert list(p.comments) == ["Skipping unknown extra network: other"]
    extra_networks.deactivate(p)
    assert network.calls[-1] == "deactivate"


def test_conds_for_schedules_a_hires_pass_for_its_own_steps(tiny_sd1_model):
    p = job(tiny_sd1_model)
    first_pass, _ = conds_for(p, tiny_sd1_model, ["[red:blue:1.5] circle"], [""], 10)
    hires, _ = conds_for(p, tiny_sd1_model, ["[red:blue:1.5] circle"], [""], 10, hires_steps=4)
    assert [s.end_at_step for s in first_pass.batch[0][0].schedules] == [10]  # 1.5 with a "." > 1: never switches
    assert [s.end_at_step for s in hires.batch[0][0].schedules] == [2, 4]  # halfway through the hires pass


def test_token_counter_ignores_tags_and_counts_styles(tiny_sd1_model, tmp_path):
    from modules.ui import token_counter

    runtime = Runtime(args=argparse.Namespace(), paths=SimpleNamespace(data_dir=tmp_path, embeddings_dir=tmp_path),
                      opts=Options(), models=SimpleNamespace(current=tiny_sd1_model))
    (tmp_path / "styles.csv").write_text("name,prompt,negative_prompt\nlong,\"{prompt}, very detailed\",bad\n")
    cat = conditioning.count_tokens(tiny_sd1_model, "a cat")
    assert token_counter(runtime, "<lora:foo:0.8> a cat") == f"{cat[0]}/{cat[1]}" == "2/75"
    assert token_counter(runtime, "a cat", ["long"]) == "5/75"
    # "AND , bad": AND is plain text in a negative prompt (a positive one would be split on it: 2 tokens)
    assert token_counter(runtime, "AND <lora:x:1>", ["long"], negative=True) == "3/75"
