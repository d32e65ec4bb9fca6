"""Every family DrUM adds, and every encoder set it refuses, through a real ComfyUI server (0.3.75 by default).

The text encoders are REAL `comfy.sd.CLIP` objects of each family (ComfyUI's own tokenizer and
encoder classes, support.tiny_models) built by the test-only node DrUMTestTinyCLIP at shrunken
depths: ComfyUI's loaders build T5-XXL and the language models at full size whatever a file
holds. Each graph runs the History Loader, the PeCA Loader and the Conditioner; the probe
(DrUMTestConditioningProbe, an output node) reports what a sampler would receive, beside
ComfyUI's own CLIP Text Encode of the same prompt. The numbers themselves are checked against an
independent computation in tests/comfy/test_comfy_families.py.
"""

import pytest

pytestmark = pytest.mark.server

TEXT = "a lighthouse on a cliff at dusk, long exposure"
HISTORY = "watercolor of a harbour at dawn\t5\nink sketch of an old lighthouse\t4\noil painting of a stormy sea\t2\n"
NEW = {  # family -> (T5 tokens of TEXT's condition, pooled width, attention mask carried)
    "pixart": (None, None, False),  # Chroma / PixArt: the prompt's own length
    "ltxv": (128, None, True),
    "mochi": (256, None, True),
    "hidream": (128, 768 + 1280, False),
}
REFUSED = {  # the test node's encoder set -> what the error must name
    "hunyuan_video": ("HunyuanVideo", "clip_l", "llama"),
    "kandinsky5": ("Kandinsky 5", "clip_l", "qwen25_7b"),
    "lumina2": ("Lumina 2", "gemma2_2b"),
    "qwen_image": ("Qwen-Image", "qwen25_7b"),
    "hunyuan_image": ("HunyuanImage", "qwen25_7b", "byt5_small"),
    "omnigen2": ("OmniGen2", "qwen25_3b"),
    "wan": ("Wan", "umt5xxl"),
    "cosmos": ("Cosmos", "t5xxl (old T5)"),
    "long_clip_l": ("Long-CLIP", "clip_l (Long-CLIP)"),
}
PROBE, PLAIN_PROBE, CONDITIONER = "5", "7", "4"


@pytest.fixture(scope="module")
def families_server(server):
    missing = {"DrUMTestTinyCLIP", "DrUMTestConditioningProbe"} - set(server.object_info())
    assert not missing, f"the test-only pack did not load: {missing}\n{server.log_tail()}"
    return server


def graph(family: str, plain: bool = True) -> dict:
    """Tiny CLIP -> DrUM Conditioner -> probe, and (`plain`) ComfyUI's own CLIP Text Encode -> probe."""
    nodes = {
        "1": {"class_type": "DrUMTestTinyCLIP", "inputs": {"family": family, "seed": 3}},
        "2": {"class_type": "DrUMHistoryLoader", "inputs": {"file": "none", "text": HISTORY}},
        "3": {"class_type": "DrUMPeCALoader", "inputs": {"L": "auto", "H": "auto", "bigG": "auto", "T5": "auto"}},
        CONDITIONER: {
            "class_type": "DrUMConditioner",
            "inputs": {"clip": ["1", 0], "adapters": ["3", 0], "history": ["2", 0], "text": TEXT, "degree": 0.3},
        },
        PROBE: {"class_type": "DrUMTestConditioningProbe", "inputs": {"conditioning": [CONDITIONER, 0]}},
    }
    if plain:
        nodes["6"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 0], "text": TEXT}}
        nodes[PLAIN_PROBE] = {"class_type": "DrUMTestConditioningProbe", "inputs": {"conditioning": ["6", 0]}}
    return nodes


@pytest.mark.parametrize("family", sorted(NEW))
def test_new_family_personalizes_in_a_real_graph(families_server, family):
    entry = families_server.run(graph(family))
    assert entry.status == "success", entry.error or entry.messages
    (probe,) = entry.outputs[PROBE]["drum_probe"]
    (plain,) = entry.outputs[PLAIN_PROBE]["drum_probe"]
    (conditioner,) = entry.outputs[CONDITIONER]["drum_conditioning"]
    assert conditioner["family"] == family and conditioner["adapters"]["T5"]
    length, pooled, masked = NEW[family]
    length = plain["tokens"][1] if length is None else length
    assert probe["tokens"] == plain["tokens"] == [1, length, 4096]  # the family's own token count, as ComfyUI encodes it
    assert probe["pooled"] == plain["pooled"] == (None if pooled is None else [1, pooled])
    assert probe["attention_mask"] == plain["attention_mask"]  # the family's mask (None where it carries none)
    assert (probe["attention_mask"] is not None) == masked
    assert set(probe["keys"]) == set(plain["keys"])  # HiDream: conditioning_llama3 passed through
    assert probe["tokens_sample"] != plain["tokens_sample"]  # the T5 adapter changed the tokens


@pytest.mark.parametrize("family", sorted(REFUSED))
def test_refused_encoder_set_is_a_named_error_before_anything_is_computed(families_server, family):
    entry = families_server.run(graph(family, plain=False))  # the refused sets' tiny vocabularies cannot encode text
    assert entry.status == "error"
    error = entry.error
    assert error["node_type"] == "DrUMConditioner" and "UnsupportedFamilyError" in error["exception_type"], error
    message = error["exception_message"]
    assert message.startswith("DrUM cannot personalize this CLIP"), message
    for named in REFUSED[family]:
        assert named in message, (named, message)
    assert "Supported families" in message and "FLUX.1: l+t5" in message and "HiDream" in message
    assert "Traceback" not in message
