"""Rules defined once in drum_core and used by the CLI, diffusers, training and the nodes:
adapter names and sizes, adapter configs, adapter file names, intensities, coreset counts, precisions."""

import inspect
import json
import math
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from drum_core import Personalizer, defaults, tiny
from drum_core.adapter_names import ADAPTER_NAMES, ENCODER_ADAPTERS, PUBLISHED_SIZES
from drum_core.cli import build_parser, main
from drum_core.coreset import coreset_sample, sample_count
from drum_core.dtypes import DTYPE_NAMES, dtype_name, parse_dtype, short_name
from drum_core.history import HISTORY_EXTENSIONS, History, HistoryError, load_history
from drum_core.intensities import check_intensities, is_intensity
from drum_core.peca import FORMAT_TAG, PeCA, PeCAConfig, PeCAFormatError
from drum_core.weights import adapter_files, find_adapter


def test_published_configs_are_the_release_sizes():
    # the release's sizes, written out: (d, FFN, queries) per adapter, 10 blocks
    release = {"L": (768, 192, 78), "H": (1024, 256, 78), "bigG": (1280, 320, 78), "T5": (1024, 1024, 256)}
    assert ADAPTER_NAMES == ("L", "H", "bigG", "T5") and set(ENCODER_ADAPTERS.values()) == set(ADAPTER_NAMES)
    for name, (width, ffn, queries) in release.items():
        config = PeCAConfig.published(name)
        assert (config.kind, config.encoder_width) == PUBLISHED_SIZES[name]
        assert (config.width, config.ffn_width, config.query_tokens, config.layers) == (width, ffn, queries, 10)
        assert config.name == name
    assert PeCAConfig.for_encoder("clip", 192, 2).name is None
    with pytest.raises(ValueError, match="not a multiple of 64"):
        PeCAConfig.for_encoder("clip", 100)
    with pytest.raises(ValueError, match="not a multiple of 64"):
        PeCAConfig.for_encoder("t5", 200)


def test_tiny_adapters_follow_the_same_constructor():
    for name, adapter in tiny.adapters("sd3").items():
        kind, _ = PUBLISHED_SIZES[name]
        expected = PeCAConfig.for_encoder(
            kind, adapter.config.encoder_width, tiny.ADAPTER_LAYERS, tiny.T5_ADAPTER_WIDTH if kind == "t5" else None
        )
        assert adapter.config == expected


def test_adapter_dtype_and_device_are_its_parameters():
    adapter = PeCA(PeCAConfig.for_encoder("clip", 64, 1)).double()
    assert adapter.dtype == torch.float64 and adapter.device == torch.device("cpu")
    assert all(p.dtype == adapter.dtype for p in adapter.parameters())


def test_a_file_claiming_another_format_is_refused_by_name(tmp_path):
    adapter = PeCA(PeCAConfig.for_encoder("clip", 64, 1))
    adapter.save(tmp_path / "mine.safetensors")
    assert PeCA.from_file(tmp_path / "mine.safetensors").config == adapter.config
    state = {k: v.contiguous() for k, v in adapter.state_dict().items()}
    save_file(state, tmp_path / "release.safetensors")  # the release's files carry no metadata
    assert PeCA.from_file(tmp_path / "release.safetensors").config == adapter.config
    save_file(state, tmp_path / "other.safetensors", {"format": "drum-caption-cache"})
    with pytest.raises(PeCAFormatError, match=rf"other.safetensors: a 'drum-caption-cache' file, not a PeCA adapter.*{FORMAT_TAG}"):
        PeCA.from_file(tmp_path / "other.safetensors")


def test_adapter_file_names_one_rule():
    files = [
        "models/x_L.safetensors",
        "weight/L.safetensors",
        "L.safetensors",
        "old-l.safetensors",
        "bigL.safetensors",
        "L.ckpt",
        "LL.safetensors",
    ]
    assert adapter_files(files, "L") == ["weight/L.safetensors", "L.safetensors", "models/x_L.safetensors", "old-l.safetensors"]
    assert adapter_files(["drum_bigg.safetensors", "bigG.safetensors"], "bigG") == ["bigG.safetensors", "drum_bigg.safetensors"]
    assert adapter_files(["T5.safetensors"], "H") == []


def test_standalone_search_matches_suffixed_names_after_exact_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    adapter = PeCA(PeCAConfig.for_encoder("clip", 64, 1))
    adapter.save(tmp_path / "drum_L.safetensors")
    assert find_adapter("L", [tmp_path], hub=False) == tmp_path / "drum_L.safetensors"
    (tmp_path / "weight").mkdir()
    adapter.save(tmp_path / "weight" / "L.safetensors")
    assert find_adapter("L", [tmp_path], hub=False) == tmp_path / "weight" / "L.safetensors"
    adapter.save(tmp_path / "L.safetensors")
    assert find_adapter("L", [tmp_path], hub=False) == tmp_path / "L.safetensors"


def test_intensities_one_rule_with_named_errors():
    assert [is_intensity(v) for v in (0.0, 2.5, -0.1, math.nan, math.inf)] == [True, True, False, False, False]
    assert check_intensities(None, 3, "x").tolist() == [1.0, 1.0, 1.0]
    torch.testing.assert_close(check_intensities([1, 2], 2, "x", torch.float64), torch.tensor([1.0, 2.0], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"refs: preference intensities must be finite and >= 0; index 2 is -1.0"):
        check_intensities([1.0, 0.0, -1.0], 3, "refs")
    with pytest.raises(ValueError, match=r"refs: 2 preference intensities for 3 prompts"):
        check_intensities([1.0, 2.0], 3, "refs")
    features = torch.randn(4, 8)
    with pytest.raises(ValueError, match=r"coreset intensities: .* index 1 is nan"):
        coreset_sample(features, [1.0, math.nan, 1.0, 1.0])
    with pytest.raises(HistoryError, match=r"intensity -1.0 of prompt 1"):
        History(["a", "b"], [1.0, -1.0])


def test_coreset_count_zero_means_no_limit():
    assert sample_count(100, 0.1) == 10 and sample_count(100, 0.1, max_count=0) == 10
    assert sample_count(100, 0.1, max_count=3) == 3 and sample_count(100, 0.1, max_count=50) == 10
    assert sample_count(4, 1.0, n=9) == 4 and sample_count(7, 0.01) == 1
    with pytest.raises(ValueError, match=r"maximum count must be >= 0 \(0 = no limit\), got -1"):
        sample_count(100, 0.1, max_count=-1)
    with pytest.raises(ValueError, match="coreset size must be >= 1"):
        sample_count(100, n=0)


def test_one_default_bound_on_references_for_the_cli_and_the_python_api():
    """A 20,000-prompt history keeps DEFAULT_MAX_REFERENCES references by default; 0 restores the paper's 10 %."""
    import inspect

    from drum_core.cli import build_parser
    from drum_core.coreset import DEFAULT_MAX_COUNT
    from drum_core.diffusers_pipelines import PipelinePersonalizer, profile_history

    assert DEFAULT_MAX_COUNT == 64
    assert sample_count(20_000, 0.1, max_count=DEFAULT_MAX_COUNT) == 64 and sample_count(20_000, 0.1, max_count=0) == 2_000
    for command in ("personalize", "profile", "check"):
        assert build_parser().parse_args([command]).max_count == DEFAULT_MAX_COUNT
    for function in (profile_history, PipelinePersonalizer.set_history):
        assert inspect.signature(function).parameters["max_count"].default == DEFAULT_MAX_COUNT


def test_precision_spellings_one_parser():
    expected = {
        torch.float32: ("float32", "fp32", "FP32"),
        torch.float16: ("float16", "fp16", "half"),
        torch.bfloat16: ("bfloat16", "bf16"),
    }
    for dtype, spellings in expected.items():
        for spelling in spellings:
            assert parse_dtype(spelling) is dtype
            assert dtype_name(spelling) == str(dtype).removeprefix("torch.")
    assert [short_name(n) for n in ("float32", "half", "bf16")] == ["fp32", "fp16", "bf16"]
    assert set(map(dtype_name, DTYPE_NAMES)) == {"float32", "float16", "bfloat16"}
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        parse_dtype("fp8")


def test_cli_max_count_zero_is_no_limit_like_the_node(capsys):
    counts = {}
    for limit in ("0", "3"):
        assert main(["profile", "--tiny-random", "--ratio", "1", "--max-count", limit, "--json", "--no-progress"]) == 0
        counts[limit] = len(json.loads(capsys.readouterr().out)["picked"])
    assert counts == {"0": len(tiny.HISTORY), "3": 3}


def test_history_extensions_one_tuple_for_core_cli_and_page(tmp_path, capsys):
    """The core reads every extension of the tuple and refuses others; the CLI says the tuple; the page's list
    (web/js/drum.js, until it reads the node schema's drum_history_extensions) is the same tuple."""
    for extension in HISTORY_EXTENSIONS:
        path = tmp_path / f"h{extension}"
        content = {".json": '["a fox"]', ".jsonl": '"a fox"\n', ".csv": "prompt\na fox\n", ".tsv": "prompt\na fox\n"}
        path.write_text(content.get(extension, "a fox\n"))
        assert list(load_history(path).prompts) == ["a fox"]
    with pytest.raises(HistoryError, match=re.escape(f"(use {', '.join(HISTORY_EXTENSIONS)})")):
        load_history(tmp_path / "h.md")
    script = (Path(__file__).parents[1] / "web" / "js" / "drum.js").read_text(encoding="utf-8")
    listed = re.search(r"const HISTORY_EXTENSIONS = \[([^\]]*)\]", script)
    assert listed or "drum_history_extensions" in script
    if listed:
        assert tuple(json.loads(f"[{listed.group(1)}]")) == HISTORY_EXTENSIONS


def test_the_papers_defaults_are_one_definition():
    """alpha 0.3, ratio 0.1, k 10, seed 42 (docs/method.md): drum_core.defaults, and every default that states them."""
    assert (defaults.DEGREE, defaults.RATIO, defaults.K, defaults.SEED) == (0.3, 0.1, 10, 42)
    coreset = inspect.signature(coreset_sample).parameters
    assert (coreset["ratio"].default, coreset["k"].default, coreset["seed"].default) == (defaults.RATIO, defaults.K, defaults.SEED)
    assert inspect.signature(sample_count).parameters["ratio"].default == defaults.RATIO
    assert inspect.signature(PeCA.forward).parameters["degree"].default == defaults.DEGREE
    assert inspect.signature(Personalizer.condition).parameters["degree"].default == defaults.DEGREE
    args = build_parser().parse_args(["personalize", "--prompt", "x"])
    assert (args.degree, args.ratio, args.k, args.coreset_seed) == ([defaults.DEGREE], defaults.RATIO, defaults.K, defaults.SEED)
