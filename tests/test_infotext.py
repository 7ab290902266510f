from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modules import infotext
from modules.infotext import create_infotext, parse_generation_parameters

V = infotext.VERSION


@dataclass
class P:
    """A duck-typed ``p`` with the attributes create_infotext reads (A1111 names)."""

    prompt: str = "a photo of a cat, (masterpiece:1.2)"
    negative_prompt: str = "blurry"
    steps: int = 20
    sampler_name: str = "DPM++ 2M"
    scheduler: str = "Automatic"
    cfg_scale: float = 7
    seed: int = 1234
    subseed_strength: float = 0
    width: int = 512
    height: int = 768
    seed_resize_from_w: int = -1
    seed_resize_from_h: int = -1
    sd_model_hash: str | None = "6ce0161689"
    sd_model_name: str | None = "v1-5-pruned-emaonly"
    clip_skip: int = 1
    batch_size: int = 1
    extra_generation_params: dict[str, Any] = field(default_factory=dict)
    all_prompts: list[str] = field(default_factory=list)
    all_negative_prompts: list[str] = field(default_factory=list)
    all_seeds: list[int] = field(default_factory=list)
    all_subseeds: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.all_prompts = self.all_prompts or [self.prompt]
        self.all_negative_prompts = self.all_negative_prompts or [self.negative_prompt]
        self.all_seeds = self.all_seeds or [self.seed]
        self.all_subseeds = self.all_subseeds or [self.seed + 1]


@dataclass
class Img2ImgP(P):
    init_images: list[Any] = field(default_factory=list)
    denoising_strength: float = 0.75


def info(p: P, **kwargs: Any) -> str:
    return create_infotext(p, p.all_prompts, p.all_seeds, p.all_subseeds, **kwargs)


def test_reference_example():
    # a1111-compat.md §2's example, plus the RNG our noise comes from and our version.
    assert info(P()) == (
        "a photo of a cat, (masterpiece:1.2)\n"
        "Negative prompt: blurry\n"
        "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 512x768, "
        f"Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, RNG: CPU, Version: {V}")


def test_negative_prompt_line_is_left_out_when_empty_and_numbers_are_str():
    p = P(prompt="a dog", negative_prompt="", sampler_name="Euler a", cfg_scale=7.0, sd_model_hash=None,
          sd_model_name=None, seed=5, width=64, height=64)
    assert info(p) == (f"a dog\nSteps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7.0, Seed: 5, "
                       f"Size: 64x64, RNG: CPU, Version: {V}")


def test_values_with_comma_colon_or_newline_are_json_quoted():
    p = P(extra_generation_params={"Lora hashes": "add_detail: 7c6bad76eb54", "TI hashes": "emb: 1a2b3c4d5e6f",
                                   "Hires prompt": "a\nb, \"c\" ü", "Plain": 'say "hi"'})
    assert info(p).endswith('RNG: CPU, Lora hashes: "add_detail: 7c6bad76eb54", TI hashes: "emb: 1a2b3c4d5e6f", '
                            'Hires prompt: "a\\nb, \\"c\\" ü", Plain: say "hi", Version: ' + V)


def test_key_order_and_optional_keys():
    p = Img2ImgP(sampler_name="Euler", scheduler="Karras", subseed_strength=0.25, all_subseeds=[777],
                 seed_resize_from_w=640, seed_resize_from_h=480, clip_skip=2,
                 extra_generation_params={"Mask blur": 4, "ENSD": 31337, "Schedule type": "Karras", "Empty": None})
    p.sd_vae_name, p.sd_vae_hash, p.image_cfg_scale = "vae-ft-mse", "735e4c3a44", 1.5
    assert info(p).split("\n")[-1] == (
        "Steps: 20, Sampler: Euler, Schedule type: Karras, CFG scale: 7, Image CFG scale: 1.5, Seed: 1234, "
        "Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, VAE hash: 735e4c3a44, VAE: vae-ft-mse, "
        "Variation seed: 777, Variation seed strength: 0.25, Seed resize from: 640x480, Denoising strength: 0.75, "
        f"Clip skip: 2, ENSD: 31337, RNG: CPU, Mask blur: 4, Version: {V}")


def test_extra_params_override_fixed_keys_in_place():
    p = P(extra_generation_params={"Hires upscale": 2.0, "Denoising strength": 0.7, "Schedule type": "Exponential"})
    line = info(p).split("\n")[-1]
    assert line.startswith("Steps: 20, Sampler: DPM++ 2M, Schedule type: Exponential, CFG scale: 7")
    assert "Model: v1-5-pruned-emaonly, Denoising strength: 0.7, RNG: CPU, Hires upscale: 2.0, Version" in line


def test_denoising_strength_only_for_img2img_or_hires():
    txt2img = P()
    txt2img.denoising_strength = 0.75
    assert "Denoising strength" not in info(txt2img)
    txt2img.enable_hr = True
    assert "Denoising strength: 0.75" in info(txt2img)
    assert "Denoising strength: 0.75" in info(Img2ImgP())


def test_bare_key_when_value_equals_key_and_none_dropped():
    p = P(extra_generation_params={"Tiling-ish": "Tiling-ish", "Nothing": None})
    assert ", Tiling-ish, Version" in info(p)
    assert "Nothing" not in info(p)


def test_per_image_values_and_batch_index():
    p = P(batch_size=2, all_prompts=["p0", "p1", "p2", "p3"], all_negative_prompts=["", "n1", "", ""],
          all_seeds=[10, 11, 12, 13], all_subseeds=[20, 21, 22, 23],
          extra_generation_params={"Per image": ["a", "b", "c", "d"]})
    text = info(p, iteration=0, position_in_batch=1)
    assert text.startswith("p1\nNegative prompt: n1\n") and "Seed: 11," in text and "Per image: b" in text
    assert info(p, iteration=1, position_in_batch=1).startswith("p3\nSteps: 20")
    assert "Seed: 13," in info(p, index=3)


def test_use_main_prompt():
    p = P(all_prompts=["first", "second"], all_negative_prompts=["neg", "neg2"], all_seeds=[1, 2], all_subseeds=[3, 4])
    p.main_prompt = "main"
    text = info(p, use_main_prompt=True, index=1)
    assert text.startswith("main\nNegative prompt: neg\n") and "Seed: 1," in text


def test_clip_skip_only_above_one():
    assert "Clip skip" not in info(P(clip_skip=1))
    assert "Clip skip: 3," in info(P(clip_skip=3))


def test_old_combined_sampler_name_and_unknown_sampler():
    assert "Sampler: DPM++ 2M SDE, Schedule type: Karras," in info(P(sampler_name="DPM++ 2M SDE Karras"))
    assert "Sampler: My sampler, Schedule type: Automatic," in info(P(sampler_name="My sampler"))


def test_parse_reference_example():
    text = (
        "a photo of a cat, (masterpiece:1.2)\nNegative prompt: blurry\n"
        "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 512x768, "
        "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.10.1")
    params = parse_generation_parameters(text)
    assert params["Prompt"] == "a photo of a cat, (masterpiece:1.2)"
    assert params["Negative prompt"] == "blurry"
    assert {k: params[k] for k in ("Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size-1", "Size-2",
                                   "Model hash", "Model", "Version")} == {
        "Steps": "20", "Sampler": "DPM++ 2M", "Schedule type": "Karras", "CFG scale": "7", "Seed": "1234",
        "Size-1": "512", "Size-2": "768", "Model hash": "6ce0161689", "Model": "v1-5-pruned-emaonly",
        "Version": "v1.10.1"}
    # Defaults for what the infotext does not say.
    assert params["Clip skip"] == "1" and params["RNG"] == "GPU" and params["Hires resize-1"] == 0
    assert params["Masked area padding"] == 32 and params["Hires sampler"] == "Use same sampler"
    assert "Size" not in params


def test_parse_emphasis_default_only_for_weighted_prompts():
    assert "Emphasis" not in parse_generation_parameters("a cat BREAK a dog\nSteps: 20, Sampler: Euler, Seed: 1")
    weighted = parse_generation_parameters("a (cat:1.2)\nNegative prompt: [ugly]\nSteps: 20, Sampler: Euler, Seed: 1")
    assert weighted["Emphasis"] == "Original"
    assert parse_generation_parameters("(cat)\nSteps: 20, Sampler: Euler, Emphasis: No norm")["Emphasis"] == "No norm"


def test_parse_old_combined_sampler_name():
    params = parse_generation_parameters("cat\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1")
    assert (params["Sampler"], params["Schedule type"]) == ("DPM++ 2M", "Karras")
    params = parse_generation_parameters("cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1")
    assert (params["Sampler"], params["Schedule type"]) == ("Euler a", "Automatic")
    params = parse_generation_parameters("cat\nSteps: 20, Sampler: Someones Sampler, CFG scale: 7")
    assert params["Sampler"] == "Someones Sampler"


def test_parse_quoted_values_and_multiline_prompts():
    text = ('line one, with: colon\nline "two"\nNegative prompt: bad\nworse\n'
            'Steps: 5, Sampler: Euler, Lora hashes: "add_detail: 7c6bad76eb54", Hires prompt: "x\\ny, \\"z\\"", '
            'Clip skip: 2')
    params = parse_generation_parameters(text)
    assert params["Prompt"] == 'line one, with: colon\nline "two"'
    assert params["Negative prompt"] == "bad\nworse"
    assert params["Lora hashes"] == "add_detail: 7c6bad76eb54"
    assert params["Hires prompt"] == 'x\ny, "z"'
    assert params["Clip skip"] == "2"


def test_parse_text_without_parameters_is_all_prompt():
    params = parse_generation_parameters("just a prompt, with: one colon\nand a second line")
    assert params["Prompt"] == "just a prompt, with: one colon\nand a second line"
    assert params["Negative prompt"] == "" and "Steps" not in params


@pytest.mark.parametrize("prompt,negative", [
    ("a cat, sitting: on a mat", "ugly, blurry"),
    ("line 1\nline 2, with comma\n\nline 4", "neg line 1\nneg: line 2"),
    ('she said "hello", then left', '"quoted"'),
    ("日本語のプロンプト, émoji 🐱, ümlaut", "низкое качество"),
    ("(masterpiece:1.2), [a:b:0.5], <lora:foo:0.8>, AND other", ""),
    ("", "only negative"),
])
def test_round_trip_tricky_prompts(prompt, negative):
    p = P(prompt=prompt, negative_prompt=negative, extra_generation_params={"Hires prompt": prompt or "x"})
    params = parse_generation_parameters(info(p))
    assert params["Prompt"] == prompt
    assert params["Negative prompt"] == negative
    assert params["Hires prompt"] == (prompt or "x")
    assert (params["Steps"], params["Seed"], params["Size-1"], params["Size-2"]) == ("20", "1234", "512", "768")
    assert (params["Sampler"], params["Schedule type"], params["RNG"]) == ("DPM++ 2M", "Karras", "CPU")


_TEXT = st.text(alphabet=st.sampled_from(list("abcXYZ019 ,:;()[]<>\"'\\/-_=éü日🐱")), max_size=30)
_LINE = _TEXT.map(str.strip).filter(lambda s: not s.startswith("Negative prompt:"))
_PROMPT = st.lists(_LINE, max_size=4).map("\n".join).map(str.strip)
# A value that is not JSON-quoted on writing but looks quoted is read back unquoted (A1111 does the same).
_VALUE = _TEXT.map(str.strip).filter(
    lambda s: not (len(s) >= 2 and s[0] == s[-1] == '"' and not any(c in s for c in ",:\n")))


@settings(max_examples=150, deadline=None)
@given(prompt=_PROMPT, negative=_PROMPT, value=_VALUE, multiline=st.lists(_VALUE, min_size=2, max_size=3))
def test_round_trip_property(prompt, negative, value, multiline):
    extra = {"Extra value": value, "Multi line": "\n".join(multiline)}
    params = parse_generation_parameters(info(P(prompt=prompt, negative_prompt=negative,
                                                extra_generation_params=extra)))
    assert params["Prompt"] == prompt
    assert params["Negative prompt"] == negative
    assert params["Extra value"] == value
    assert params["Multi line"] == "\n".join(multiline)


def test_the_parameter_scanner_finds_what_a1111s_pattern_finds_in_linear_time():
    import random
    import re
    import time

    a1111 = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')  # the pattern's facts, as a reference
    alphabet = ["a", "Z", "_", "1", " ", "\t", "-", "/", ":", ",", '"', "\\", "é", "\u3000", "x y"]
    rnd = random.Random(1)
    for _ in range(20000):
        line = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 24)))
        assert infotext.find_params(line) == a1111.findall(line), line
    # Linear: 8 times the text takes about 8 times as long, far below the 64 times of A1111's pattern (23 s for 64 k
    # of "A"); the best of 5 runs, so that a busy machine does not decide it.
    def fastest(text: str) -> float:
        times = []
        for _ in range(5):
            started = time.perf_counter()
            infotext.parse_generation_parameters(text)
            times.append(time.perf_counter() - started)
        return min(times)

    for unit in ("A", "A -", 'k: "x,', '\\"'):
        small, large = unit * (8192 // len(unit)), unit * (65536 // len(unit))
        assert fastest(large) < 32 * fastest(small) + 0.1, unit
