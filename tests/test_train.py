"""Adapter training (the drum_core.train package) with tiny random transformers encoders."""

import csv
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file
from support.cli_errors import assert_one_line_error

from drum_core import PeCA, PeCAConfig, tiny
from drum_core.encoders import HFClipBackend, HFT5Backend
from drum_core.train.caption_cache import CaptionCache, CaptionCacheError, build_caption_cache
from drum_core.train.captions import CaptionSource, CaptionSourceError, CaptionSplit, held_out, shuffled
from drum_core.train.checkpoints import CHECKPOINT_NAME, CheckpointError
from drum_core.train.cli import main
from drum_core.train.data import CachedCaptions, StreamedCaptions
from drum_core.train.distributed import Processes
from drum_core.train.recipe import TrainOptions, caption_targets, lr_factor, parameter_groups
from drum_core.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
WORDS = "red blue green small old cat dog fox owl house tree river mountain city boat painting photo sketch of a in the at night snowy forest".split()


def make_captions(count: int, seed: int = 0) -> list[str]:
    r = random.Random(seed)
    return [" ".join(r.choice(WORDS) for _ in range(r.randint(3, 10))) for _ in range(count)]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def clip_backend():
    tokenizer = tiny.clip_tokenizer()
    return HFClipBackend(tiny.clip_text_model(tokenizer, 64), tokenizer)


@pytest.fixture(scope="module")
def t5_backend():
    from transformers import T5Config, T5EncoderModel

    tokenizer = tiny.t5_tokenizer()
    config = T5Config(vocab_size=len(tokenizer), d_model=256, d_kv=16, d_ff=64, num_layers=1, num_heads=2, feed_forward_proj="gated-gelu")
    torch.manual_seed(0)
    return HFT5Backend(T5EncoderModel(config).eval(), tokenizer)


@pytest.fixture(scope="module")
def caption_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("captions") / "captions.txt"
    path.write_text("\n".join(make_captions(240)) + "\n", encoding="utf-8")
    return path


def options(out, **changes) -> TrainOptions:
    base = dict(batch_size=16, epochs=2, warmup_steps=4, layers=2, save_every=1000, validate_every=1000, tensorboard=False, progress=False)
    return TrainOptions(out=str(out), **{**base, **changes})


def split_of(path, **changes) -> CaptionSplit:
    return CaptionSplit(CaptionSource.of(path), **{"validation_fraction": 0.1, "validation_size": 16, **changes})


def weights_of(out) -> dict[str, torch.Tensor]:
    return torch.load(Path(out) / CHECKPOINT_NAME, weights_only=True)["model"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ---------------------------------------------------------------------------------- caption sources
def test_sources_stream_every_format(tmp_path):
    captions = ["a red fox", "an owl, at night", 'a "quoted" caption']
    (tmp_path / "c.txt").write_text("a red fox\n\n  an owl, at night \n" + 'a "quoted" caption\n', encoding="utf-8")
    (tmp_path / "c.tsv").write_text("".join(f"{c}\thttp://x/{i}.jpg\n" for i, c in enumerate(captions)), encoding="utf-8")
    with open(tmp_path / "c.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["url", "caption"], *[[f"u{i}", c] for i, c in enumerate(captions)]])
    pq.write_table(pa.table({"id": [1, 2, 3], "text": captions}), tmp_path / "c.parquet", row_group_size=2)
    (tmp_path / "notes.md").write_text("not captions", encoding="utf-8")  # skipped in a folder: unknown suffix
    for name in ("c.txt", "c.tsv", "c.csv", "c.parquet"):
        assert list(CaptionSource.of(tmp_path / name)) == captions, name
    assert list(CaptionSource.of(tmp_path)) == captions * 4  # a folder: its files in name order
    with pytest.raises(CaptionSourceError, match=r"c\.csv: no column 'prompt'; columns are \['url', 'caption'\]"):
        list(CaptionSource.of(tmp_path / "c.csv", column="prompt"))
    with pytest.raises(CaptionSourceError, match=r"cannot tell the caption format from '\.md'"):
        list(CaptionSource.of(tmp_path / "notes.md"))


def test_split_by_hash_and_shuffle(caption_file):
    split = split_of(caption_file, validation_fraction=0.2, validation_size=1000)
    train, validation = list(split.train()), split.validation()
    assert len(train) + len(validation) == 240 and not set(train) & set(validation)
    assert 20 < len(validation) < 80  # about 20 %
    assert all(held_out(c, 0.2) for c in validation) and not any(held_out(c, 0.2) for c in train)
    order = list(shuffled(train, 50, torch.Generator().manual_seed(1)))
    assert sorted(order) == sorted(train) and order != train
    assert order == list(shuffled(train, 50, torch.Generator().manual_seed(1)))
    # a buffer as large as the data is a full permutation, the order the caption cache uses
    full = list(shuffled(range(len(train)), 10_000, torch.Generator().manual_seed(3)))
    assert full == torch.randperm(len(train), generator=torch.Generator().manual_seed(3)).tolist()


# ---------------------------------------------------------------------------------- the caption cache
def test_cache_round_trip_and_resume(tmp_path, caption_file, clip_backend):
    split = split_of(caption_file)
    cache = build_caption_cache(tmp_path / "cache", split, clip_backend, shard_rows=64, dtype="float32")
    train = list(split.train())
    assert cache.train_count == len(train) and list(cache.captions()) == train
    assert cache.validation_count == 16 and list(cache.captions("val")) == split.validation()
    rows = [0, 5, 63, 64, len(train) - 1]
    states, eos = cache.train_rows(rows)
    fresh_states, fresh_eos = caption_targets(clip_backend, [train[i] for i in rows])
    assert torch.equal(states, fresh_states) and torch.equal(eos, fresh_eos)
    assert torch.equal(eos, clip_backend.raw_pooled([train[i] for i in rows]))  # the raw EOS state of the last layer
    assert torch.equal(cache.query(), clip_backend.empty_query())
    # an interrupted build (no index, one shard missing) only writes what is missing
    os.remove(tmp_path / "cache" / "index.json")
    os.remove(tmp_path / "cache" / "train-00001.safetensors")
    kept = os.stat(tmp_path / "cache" / "train-00000.safetensors").st_mtime_ns
    again = build_caption_cache(tmp_path / "cache", split, clip_backend, shard_rows=64, dtype="float32")
    assert os.stat(tmp_path / "cache" / "train-00000.safetensors").st_mtime_ns == kept
    assert torch.equal(again.train_rows(rows)[0], states)
    with pytest.raises(IndexError, match="out of range"):
        cache.train_rows([len(train)])


def test_cache_refuses_another_encoder(tmp_path, caption_file, clip_backend, t5_backend):
    build_caption_cache(tmp_path / "cache", split_of(caption_file), clip_backend, shard_rows=64)
    with pytest.raises(CaptionCacheError, match="holds states of encoder 'hf-clip:.*not of 'hf-t5:"):
        build_caption_cache(tmp_path / "cache", split_of(caption_file), t5_backend)
    with pytest.raises(CaptionCacheError, match="not a caption cache"):
        CaptionCache(tmp_path)


# ---------------------------------------------------------------------------------- recipe pieces
def test_schedule_and_parameter_groups(clip_backend):
    factors = [lr_factor(step, warmup=10, total=100) for step in range(100)]
    assert factors[0] == pytest.approx(2 / 10) and factors[8] == pytest.approx(1.0)  # release: (s + 1) / warmup, s 1-based
    assert factors[9] == pytest.approx(1.0) and factors[-1] == pytest.approx(0.0)  # cosine to 0 at the last step
    assert all(a >= b for a, b in zip(factors[9:], factors[10:]))
    model = PeCA(PeCAConfig.for_encoder("clip", 64, 2))
    no_decay, decay = parameter_groups(model, 0.2)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in decay["params"]} == {n for n, p in model.named_parameters() if n.endswith("weight") and "norm" not in n}
    assert all(n.endswith("bias") or "norm" in n for n in (names[id(p)] for p in no_decay["params"]))
    assert decay["weight_decay"] == 0.2 and no_decay["weight_decay"] == 0.0
    assert not model.base_query.requires_grad


# ---------------------------------------------------------------------------------- training
def test_loss_falls_and_export_loads(tmp_path, caption_file, clip_backend):
    cache = build_caption_cache(tmp_path / "cache", split_of(caption_file), clip_backend, shard_rows=64)
    trainer = Trainer(options(tmp_path / "run", epochs=20, lr=2e-3, warmup_steps=20, validate_every=50), CachedCaptions(cache, seed=42))
    before = trainer.validate()
    result = trainer.run()
    assert result.finished and result.step == trainer.total_steps >= 200
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == result.step
    after = float(rows[-1]["val_loss"])
    assert after < 0.5 * before, (before, after)
    assert float(rows[-1]["loss"]) < 0.5 * float(rows[0]["loss"])
    assert (tmp_path / "run" / "loss.png").stat().st_size > 1000
    adapter = PeCA.from_file(result.adapter_path)  # strict, published layout
    assert adapter.config == trainer.config
    assert torch.equal(adapter.base_query, clip_backend.empty_query())
    with torch.no_grad():
        states, eos = cache.validation_rows(range(4))
        tokens, pooled = adapter(clip_backend.empty_query(), states)
        assert torch.nn.functional.cosine_similarity(tokens, states, dim=-1).mean() > 1 - after


def test_t5_adapter_trains_through_projections(tmp_path, caption_file, t5_backend):
    data = StreamedCaptions(split_of(caption_file), t5_backend, shuffle_buffer=64, seed=42)
    trainer = Trainer(options(tmp_path / "run", epochs=1, validate_every=1), data)
    assert trainer.config.kind == "t5" and trainer.config.width == 64 and trainer.config.query_tokens == 256
    result = trainer.run()
    adapter = PeCA.from_file(result.adapter_path)
    assert adapter.config.kind == "t5" and adapter.config.encoder_width == 256
    with torch.no_grad():
        assert torch.allclose(adapter.base_query, adapter.pre_proj(t5_backend.empty_query()))
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        losses = [float(r["val_loss"]) for r in csv.DictReader(f)]
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("cached", [False, True])
def test_interrupted_run_resumes_identically(tmp_path, caption_file, clip_backend, cached):
    def data():
        if cached:
            return CachedCaptions(build_caption_cache(tmp_path / "cache", split_of(caption_file), clip_backend, shard_rows=64), seed=42)
        return StreamedCaptions(split_of(caption_file), clip_backend, shuffle_buffer=32, seed=42)

    whole = Trainer(options(tmp_path / "whole"), data()).run()
    first = Trainer(options(tmp_path / "parts", max_steps=9), data()).run()  # stops mid-epoch 1 of 2
    assert not first.finished and first.step == 9
    # an early stop exports the adapter as trained so far (the checkpoint's weights, the training query) and its loss plot
    early, at_step_9 = PeCA.from_file(first.adapter_path).state_dict(), weights_of(tmp_path / "parts")
    assert_same_weights({k: v for k, v in early.items() if k != "base_query"}, {k: v for k, v in at_step_9.items() if k != "base_query"})
    assert torch.equal(early["base_query"], clip_backend.empty_query()) and (tmp_path / "parts" / "loss.png").stat().st_size > 1000
    resumed = Trainer(options(tmp_path / "parts"), data())
    assert resumed.resumed and resumed.step == 9
    second = resumed.run()
    assert second.finished and second.step == whole.step == 26
    assert_same_weights(weights_of(tmp_path / "whole"), weights_of(tmp_path / "parts"))
    assert_same_weights(load_file(whole.adapter_path), load_file(second.adapter_path))
    with open(tmp_path / "parts" / "metrics.csv", newline="") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == list(range(1, 27))


def test_training_from_cache_equals_training_from_encoder(tmp_path, caption_file, clip_backend):
    split = split_of(caption_file)
    cache = build_caption_cache(tmp_path / "cache", split, clip_backend, shard_rows=64, dtype="float32")
    # a shuffle buffer as large as the data gives the cache's order: a full permutation per epoch
    streamed = Trainer(options(tmp_path / "streamed"), StreamedCaptions(split, clip_backend, shuffle_buffer=10_000, seed=42)).run()
    cached = Trainer(options(tmp_path / "cached"), CachedCaptions(cache, seed=42)).run()
    assert streamed.step == cached.step == 26
    assert_same_weights(weights_of(tmp_path / "streamed"), weights_of(tmp_path / "cached"))


def test_checkpoint_of_another_recipe_is_refused(tmp_path, caption_file, clip_backend):
    data = StreamedCaptions(split_of(caption_file), clip_backend, shuffle_buffer=32, seed=42)
    Trainer(options(tmp_path / "run", max_steps=1), data).run()
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt belongs to a run with other settings \(lr: 0\.0005 -> 0\.001\)"):
        Trainer(options(tmp_path / "run", lr=1e-3), data)


# ---------------------------------------------------------------------------------- two processes (DDP, gloo)
def _ddp_worker(rank: int, init_file: str, cache_dir: str, out: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    processes = Processes.start("cpu")
    assert processes.world_size == 2 and processes.rank == rank
    run = options(out, dropout=0.0, micro_batch=3)  # 8 captions a process: micro-batches 3 + 3 + 2
    Trainer(run, CachedCaptions(CaptionCache(cache_dir), seed=42), processes).run()
    torch.distributed.destroy_process_group()


def test_two_process_ddp_matches_one_process(tmp_path, caption_file, clip_backend):
    cache = build_caption_cache(tmp_path / "cache", split_of(caption_file), clip_backend, shard_rows=64, dtype="float32")
    torch.multiprocessing.spawn(_ddp_worker, args=(str(tmp_path / "init"), str(tmp_path / "cache"), str(tmp_path / "ddp")), nprocs=2)
    single = Trainer(options(tmp_path / "single", dropout=0.0), CachedCaptions(cache, seed=42)).run()
    assert single.step == 26
    ddp, one = weights_of(tmp_path / "ddp"), weights_of(tmp_path / "single")
    for key in one:
        if not key.endswith("attn.key.bias"):  # its true gradient is 0 (softmax ignores it): Adam turns rounding noise into steps
            assert torch.allclose(ddp[key], one[key], rtol=1e-5, atol=1e-6), key
    ddp_adapter, one_adapter = PeCA.from_file(tmp_path / "ddp" / "adapter.safetensors"), PeCA.from_file(single.adapter_path)
    states, _ = cache.validation_rows(range(4))
    with torch.no_grad():
        for ddp_out, one_out in zip(ddp_adapter(cache.query(), states), one_adapter(cache.query(), states)):
            assert torch.allclose(ddp_out, one_out, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------- the command, a real SIGTERM
def test_sigterm_saves_and_the_command_resumes(tmp_path, caption_file):
    tokenizer = tiny.clip_tokenizer()
    encoder_dir = tmp_path / "encoder"
    tiny.clip_text_model(tokenizer, 64).save_pretrained(encoder_dir)
    tokenizer.save_pretrained(encoder_dir)
    flags = ["--encoder", str(encoder_dir), "--captions", str(caption_file), "--batch-size", "8", "--epochs", "50"]
    flags += [
        "--layers",
        "2",
        "--warmup-steps",
        "4",
        "--validation-fraction",
        "0.1",
        "--validation-size",
        "8",
        "--no-progress",
        "--no-tensorboard",
    ]
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "drum_core.train", *flags, "--out", str(run)], env=env, cwd=tmp_path)
    metrics = run / "metrics.csv"
    while process.poll() is None and (not metrics.exists() or len(metrics.read_text().splitlines()) < 4):
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    assert process.wait() == 128 + signal.SIGTERM
    stopped = torch.load(run / CHECKPOINT_NAME, weights_only=True)["step"]
    assert 3 <= stopped < 50 * 27
    assert main([*flags, "--out", str(run), "--max-steps", str(stopped + 2)]) == 0  # resumes, 2 more steps
    assert main([*flags, "--out", str(tmp_path / "straight"), "--max-steps", str(stopped + 2)]) == 0
    assert torch.load(run / CHECKPOINT_NAME, weights_only=True)["step"] == stopped + 2
    assert_same_weights(weights_of(run), weights_of(tmp_path / "straight"))
    # --max-steps stops early and still exports a loadable adapter (the checkpoint's weights) and its loss plot
    exported = PeCA.from_file(run / "adapter.safetensors").state_dict()
    assert all(torch.equal(exported[k], v) for k, v in weights_of(run).items() if k != "base_query")
    assert (run / "loss.png").stat().st_size > 1000


# ---------------------------------------------------------------------------------- the command, bad input
TINY = ["--encoder", "tiny-clip", "--no-progress"]


def test_missing_or_empty_caption_file_is_one_line_and_exit_2(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "captions.txt"
    assert_one_line_error(
        capsys, "train", main([*TINY, "--captions", str(missing), "--out", str(tmp_path / "run")]), str(missing), "not found"
    )
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    assert_one_line_error(
        capsys, "train", main([*TINY, "--captions", str(empty), "--out", str(tmp_path / "run")]), str(empty), "no training captions"
    )
    cache = str(tmp_path / "cache")
    assert_one_line_error(
        capsys, "train", main([*TINY, "--captions", str(empty), "--cache", cache, "--cache-only"]), "no training captions"
    )
    assert not (tmp_path / "run" / CHECKPOINT_NAME).exists()


@pytest.mark.parametrize(
    "flags, refused",
    [
        (["--cache", "C", "--cache-only", "--lr", "1e-3", "--epochs", "3"], "--epochs, --lr do nothing with --cache-only"),
        (["--cache", "C", "--cache-only", "--out", "R"], "--out does nothing with --cache-only"),
        (["--cache-only", "--out", "R"], "--cache-only needs --cache"),
        (["--out", "R", "--cache-dtype", "float32"], "--cache-dtype does nothing without --cache"),
        (["--out", "R", "--cache", "C", "--shuffle-buffer", "10"], "--shuffle-buffer does nothing with --cache"),
        (["--cache", "C"], "--out is required"),
    ],
)
def test_flags_that_do_nothing_are_refused(tmp_path, monkeypatch, capsys, caption_file, flags, refused):
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(capsys, "train", main([*TINY, "--captions", str(caption_file), *flags]), refused)
    assert not list(tmp_path.iterdir())  # refused before anything is written


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--batch-size", "0"], "--batch-size must be a whole number >= 1, got 0"),
        (["--batch-size", "-4"], "--batch-size must be a whole number >= 1, got -4"),
        (["--epochs", "-1"], "--epochs must be a whole number >= 1, got -1"),
        (["--epochs", "0"], "--epochs must be a whole number >= 1, got 0"),
        (["--max-steps", "-1"], "--max-steps must be a whole number >= 1, got -1"),
        (["--micro-batch", "0"], "--micro-batch must be a whole number >= 1, got 0"),
        (["--lr", "nan"], "--lr must be a finite number > 0, got nan"),
        (["--lr", "0"], "--lr must be a finite number > 0, got 0.0"),
        (["--eps", "inf"], "--eps must be a finite number > 0, got inf"),
        (["--weight-decay", "-0.1"], "--weight-decay must be a finite number >= 0, got -0.1"),
        (["--dropout", "1.5"], "--dropout must be in [0, 1), got 1.5"),
        (["--betas", "0.9", "1.0"], "--betas must be two numbers in [0, 1), got (0.9, 1.0)"),
        (["--warmup-steps", "-1"], "--warmup-steps must be a whole number >= 0, got -1"),
        (["--seed", "-3"], "--seed must be a whole number >= 0, got -3"),
        (["--layers", "0"], "--layers must be a whole number >= 1, got 0"),
        (["--save-every", "0"], "--save-every must be a whole number >= 1, got 0"),
        (["--validation-fraction", "1"], "--validation-fraction must be in [0, 1), got 1.0"),
        (["--validation-size", "-1"], "--validation-size must be a whole number >= 0, got -1"),
    ],
)
def test_values_no_run_can_use_are_refused_before_anything_loads(tmp_path, monkeypatch, capsys, flags, expected):
    """Before the encoder is opened: an encoder that is not there would fail later, so reaching it shows in the message."""
    monkeypatch.chdir(tmp_path)
    captions = tmp_path / "captions.txt"
    captions.write_text("a fox\n", encoding="utf-8")
    argv = ["--encoder", str(tmp_path / "no-encoder"), "--captions", str(captions), "--out", "run", "--no-progress", *flags]
    assert_one_line_error(capsys, "train", main(argv), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["captions.txt"]  # nothing written


def test_a_binary_caption_file_is_refused_by_the_history_rule(tmp_path, capsys):
    """The rule and the words of drum_core.history.not_utf8, before the encoder is opened (tiny-clip would open)."""
    binary = tmp_path / "model.bin"
    binary.write_bytes(b"\x00\x01\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    argv = [*TINY, "--captions", str(binary), "--format", "text", "--out", str(tmp_path / "run")]
    assert_one_line_error(capsys, "train", main(argv), f"{binary} line 1: byte 0x89 at column 3 is not UTF-8; save the file as UTF-8")
    assert not (tmp_path / "run").exists()
    late = tmp_path / "late.txt"  # valid for the first 64 KiB: refused while streaming, with the same words
    late.write_bytes(b"a caption\n" * 7000 + b"caf\xe9\n")
    with pytest.raises(CaptionSourceError, match=rf"{re.escape(str(late))} line 7001: byte 0xe9 at column 4 is not UTF-8"):
        list(CaptionSource.of(late))
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbfa fox\n")
    assert list(CaptionSource.of(bom)) == ["a fox"]  # a byte-order mark is accepted, as in histories


def test_an_encoder_folder_that_is_not_there_is_one_line_and_exit_2(tmp_path, capsys, caption_file):
    argv = ["--encoder", str(tmp_path / "no-encoder"), "--captions", str(caption_file), "--out", str(tmp_path / "run"), "--no-progress"]
    assert_one_line_error(capsys, "train", main(argv), f"{tmp_path / 'no-encoder'}: no such folder")


def test_a_mistyped_flag_is_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as exited:
        main([*TINY, "--captions", "c.txt", "--out", "run", "--max-step", "5"])
    assert_one_line_error(capsys, "train", exited.value.code, "unrecognized arguments: --max-step 5")


def test_a_finished_cache_refuses_caption_flags(tmp_path, capsys, caption_file):
    cache = str(tmp_path / "cache")
    assert main([*TINY, "--captions", str(caption_file), "--cache", cache, "--cache-only", "--validation-fraction", "0.1"]) == 0
    assert "caption cache ready" in capsys.readouterr().out
    argv = ["--cache", cache, "--captions", str(caption_file), "--out", str(tmp_path / "run"), "--no-progress"]
    assert_one_line_error(capsys, "train", main(argv), f"--captions does nothing with the finished caption cache {cache}")


def test_drum_train_subprocess_bad_input_has_no_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "drum_core.cli", "train", *TINY, "--captions", str(tmp_path / "missing.tsv"), "--out", str(tmp_path)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"drum train: caption source not found: {tmp_path / 'missing.tsv'}"
    ]
