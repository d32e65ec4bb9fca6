"""History from the images a user made: ComfyUI graphs, the formats ComfyUI and A1111 write, scans, the scan cache."""

import json
import os
import struct

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from support.output_images import (
    drum_graph,
    encode,
    flux_graph,
    ksampler,
    outputs,
    png_with_chunk,
    primitive_graph,
    save_a1111_jpeg,
    save_animated_png,
    save_png,
    save_webp,
    sd1_graph,
    sdxl_graph,
)

from drum_core.history import load_history, split_history
from drum_core.image_history import (
    MAX_TEXT_BYTES,
    GraphError,
    ScanCache,
    a1111_prompt,
    load_any_history,
    prompts_of_graph,
    read_image_prompts,
    scan_images,
    write_history_csv,
)


def test_sd1_positive_only():
    assert prompts_of_graph(sd1_graph()) == ["a red fox in the snow"]


def test_sdxl_texts_of_one_encoder_make_one_prompt_in_text_input_order():
    assert prompts_of_graph(sdxl_graph()) == ["a castle, oil painting"]
    same = sdxl_graph()
    same["6"]["inputs"]["text_l"] = "a castle"  # identical boxes: once
    assert prompts_of_graph(same) == ["a castle"]


def test_flux_guider_chain_and_empty_clip_l():
    assert prompts_of_graph(flux_graph()) == ["a lighthouse at dusk"]


def test_text_from_a_primitive_and_from_string_nodes():
    assert prompts_of_graph(primitive_graph()) == ["a harbour in watercolor"]
    graph = sd1_graph()
    graph["10"] = {"class_type": "PrimitiveString", "inputs": {"value": "a cat"}}
    graph["14"] = {"class_type": "StringConcatenate", "inputs": {"string_a": ["10", 0], "string_b": "on a sofa", "delimiter": " "}}
    graph["6"]["inputs"]["text"] = ["14", 0]
    assert prompts_of_graph(graph) == ["a cat on a sofa"]


def test_drum_conditioner_text_counts_and_the_history_box_does_not():
    assert prompts_of_graph(drum_graph()) == ["a knight, personalized"]


def test_conditioning_nodes_in_between_and_several_positives():
    graph = sd1_graph("base prompt")
    graph["20"] = encode("second prompt")
    graph["21"] = {"class_type": "ConditioningSetTimestepRange", "inputs": {"start": 0.0, "end": 0.5, "conditioning": ["20", 0]}}
    graph["22"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["6", 0], "conditioning_2": ["21", 0]}}
    graph["23"] = encode("third, concatenated")
    graph["24"] = {"class_type": "ConditioningConcat", "inputs": {"conditioning_to": ["22", 0], "conditioning_from": ["23", 0]}}
    graph["3"]["inputs"]["positive"] = ["24", 0]
    graph["7"] = {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["6", 0]}}  # negative from the positive encoder
    assert prompts_of_graph(graph) == ["base prompt", "second prompt", "third, concatenated"]
    # a second sampler (a refiner pass) with its own positive, and the same text again: once
    graph["30"] = encode("refiner prompt")
    graph["31"] = encode("base prompt")
    graph["32"] = ksampler(("30", 0), ("31", 0), latent=("3", 0))
    graph["33"] = ksampler(("31", 0), ("7", 0), latent=("32", 0))
    assert prompts_of_graph(graph) == ["base prompt", "second prompt", "third, concatenated", "refiner prompt"]


def test_controlnet_apply_follows_the_side_of_the_output_used():
    graph = sd1_graph("fox", "bad")
    graph["40"] = {
        "class_type": "ControlNetApplyAdvanced",
        "inputs": {"positive": ["6", 0], "negative": ["7", 0], "control_net": ["41", 0], "image": ["42", 0], "strength": 1.0},
    }
    graph["3"]["inputs"]["positive"] = ["40", 0]
    graph["3"]["inputs"]["negative"] = ["40", 1]
    assert prompts_of_graph(graph) == ["fox"]


def test_dual_cfg_guider_and_cfg_guider():
    graph = flux_graph()
    graph["6"] = encode("first")
    graph["30"] = encode("second")
    graph["31"] = encode("the negative")
    graph["22"] = {
        "class_type": "DualCFGGuider",
        "inputs": {"model": ["4", 0], "cond1": ["26", 0], "cond2": ["30", 0], "negative": ["31", 0]},
    }
    assert prompts_of_graph(graph) == ["first", "second"]
    graph["22"] = {"class_type": "CFGGuider", "inputs": {"model": ["4", 0], "positive": ["30", 0], "negative": ["31", 0], "cfg": 4}}
    assert prompts_of_graph(graph) == ["second"]


def test_cycles_dangling_links_and_odd_nodes_never_raise():
    graph = sd1_graph()
    graph["50"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["51", 0], "conditioning_2": ["6", 0]}}
    graph["51"] = {
        "class_type": "ConditioningCombine",
        "inputs": {"conditioning_1": ["50", 0], "conditioning_2": ["99", 0]},
    }  # cycle + dangling
    graph["52"] = {"class_type": "PrimitiveString", "inputs": {"value": ["52", 0]}}  # a string node linked to itself
    graph["53"] = encode(["52", 0])
    graph["54"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["53", 0], "conditioning_2": "junk"}}
    graph["3"]["inputs"]["positive"] = ["51", 0]
    graph["60"] = "not a node"
    graph["61"] = {"class_type": "KSampler", "inputs": {"positive": ["54", 0], "negative": [1, 2, 3]}}
    graph["62"] = {"class_type": 7, "inputs": None}
    assert prompts_of_graph(graph) == ["a red fox in the snow"]
    for bad in ([1, 2], "text", {}, {"1": {"inputs": {}}}, None):
        with pytest.raises(GraphError):
            prompts_of_graph(bad)
    deep = sd1_graph()
    for i in range(100, 5100):  # a chain of string concatenations deeper than Python's stack
        deep[str(i)] = {"class_type": "StringConcatenate", "inputs": {"string_a": [str(i + 1), 0], "string_b": "x", "delimiter": ""}}
    deep["6"]["inputs"]["text"] = ["100", 0]
    with pytest.raises(GraphError, match="too deeply"):
        prompts_of_graph(deep)


def test_a1111_forge_and_fooocus_parameters():
    text = "a red fox, masterpiece\nin the snow\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1"
    assert a1111_prompt(text) == "a red fox, masterpiece\nin the snow"
    assert a1111_prompt("just a prompt\nSteps: 20, Sampler: Euler") == "just a prompt"
    assert a1111_prompt('{"prompt": "fooocus prompt", "negative_prompt": "x"}') == "fooocus prompt"


# --- Image files in the formats the savers write -----------------------------------------------


def test_each_saver_format_gives_its_positive_prompts(tmp_path):
    assert read_image_prompts(save_png(tmp_path / "a.png", sd1_graph())).prompts == ("a red fox in the snow",)
    assert read_image_prompts(save_animated_png(tmp_path / "b.png", flux_graph())).prompts == ("a lighthouse at dusk",)
    assert read_image_prompts(save_webp(tmp_path / "c.webp", sdxl_graph())).prompts == ("a castle, oil painting",)
    assert read_image_prompts(save_webp(tmp_path / "d.webp", drum_graph(), frames=3)).prompts == ("a knight, personalized",)
    params = "a forge prompt\nNegative prompt: bad\nSteps: 20, Seed: 3"
    assert read_image_prompts(save_png(tmp_path / "e.png", text={"parameters": params})).prompts == ("a forge prompt",)
    assert read_image_prompts(save_a1111_jpeg(tmp_path / "f.jpg", params)).prompts == ("a forge prompt",)
    webp = tmp_path / "g.webp"
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + params.encode("utf-16-be")
    Image.new("RGB", (8, 8)).save(webp, exif=exif.tobytes())
    assert read_image_prompts(webp).prompts == ("a forge prompt",)


def test_compressed_text_chunks_and_the_png_time_chunk(tmp_path):
    info = PngInfo()
    info.add_itxt("prompt", json.dumps(sd1_graph("itxt prompt, é")), zip=True)
    info.add(b"tIME", struct.pack(">HBBBBB", 2024, 5, 1, 12, 30, 0))
    path = tmp_path / "i.png"
    Image.new("RGB", (4, 4)).save(path, pnginfo=info)
    found = read_image_prompts(path)
    assert found.prompts == ("itxt prompt, é",) and found.time == 1714566600.0  # 2024-05-01T12:30:00Z
    z = PngInfo()
    z.add_text("prompt", json.dumps(sd1_graph("ztxt prompt")), zip=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "z.png", pnginfo=z)
    assert read_image_prompts(tmp_path / "z.png").prompts == ("ztxt prompt",)


def test_pixels_are_never_decoded(tmp_path):
    """A PNG whose image data is garbage still gives its prompt: only metadata chunks are read."""
    path = save_png(tmp_path / "p.png", sd1_graph(), size=(64, 64))
    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT") + 4
    data[start : start + 40] = os.urandom(40)
    path.write_bytes(bytes(data))
    with pytest.raises(OSError, match="broken data stream"):
        Image.open(path).load()  # decoding the pixels would fail
    assert read_image_prompts(path).prompts == ("a red fox in the snow",)


# --- Bad input: a count and a reason, never a crash ---------------------------------------------


def bad_folder(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "random.png").write_bytes(os.urandom(500))
    (folder / "random.jpg").write_bytes(b"\xff\xd8" + bytes(50))  # a JPEG start, then no marker
    (folder / "empty.webp").write_bytes(b"")
    (folder / "truncated.png").write_bytes(save_png(tmp_path / "whole.png", sd1_graph()).read_bytes()[:60])
    save_png(folder / "plain.png")
    png_with_chunk(folder / "notjson.png", b"prompt", b"{not json")
    png_with_chunk(folder / "notgraph.png", b"prompt", b'["a", "list"]')
    png_with_chunk(folder / "nested.png", b"prompt", b"[" * 100_000 + b"]" * 100_000)  # deeper than json's recursion
    graph = sd1_graph()
    graph["3"]["inputs"]["positive"] = ["99", 0]  # dangling
    save_png(folder / "dangling.png", graph)
    cyclic = {
        "1": {"class_type": "KSampler", "inputs": {"positive": ["2", 0]}},
        "2": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["2", 0]}},
    }
    save_png(folder / "cycle.png", cyclic)
    png_with_chunk(folder / "huge.png", b"prompt", b" " * (MAX_TEXT_BYTES + 1))
    os.mkfifo(folder / "fifo.png")  # tests run as root: a FIFO is a file no scan can read (opening it would block)
    (folder / "dir.png").mkdir()  # a folder named like an image is walked, not read
    save_png(folder / "dir.png" / "good.png", sd1_graph("inside a folder named like an image"))
    (folder / "loop").symlink_to(folder, target_is_directory=True)  # a symlink loop
    (folder / "link.png").symlink_to(folder / "plain.png")
    (folder / "notes.txt").write_text("not looked at")
    return folder


def test_bad_files_are_counted_by_reason(tmp_path):
    scan = scan_images([bad_folder(tmp_path)])
    assert scan.history.prompts == ("inside a folder named like an image",)
    assert scan.skipped == {
        "not an image": 2,
        "truncated": 2,
        "no metadata": 1,
        "not JSON": 2,
        "not a graph": 1,
        "no positive prompt": 2,
        "too large": 1,
        "unreadable": 1,
        "linked": 2,
    }
    assert scan.read == 13 and scan.keys == ("dir.png/good.png",)


def test_a_missing_source_and_an_empty_result_are_named_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        scan_images([tmp_path / "nowhere"])
    save_png(tmp_path / "plain.png")
    with pytest.raises(Exception, match=r"no prompt found in 1 images read \(1 skipped: 1 no metadata\)"):
        load_any_history(tmp_path)


# --- Scans ----------------------------------------------------------------------------------


def test_scan_is_oldest_first_with_keys_relative_to_the_folder(tmp_path):
    scan = scan_images([outputs(tmp_path)])
    assert scan.history.prompts == ("first", "second", "a harbour in watercolor", "a lighthouse at dusk", "first")
    assert scan.history.timestamps == (1000.0, 2000.0, 3000.0, 4000.0, 5000.0)
    assert scan.keys == ("ComfyUI_00001_.png", "ComfyUI_00002_.png", "sub/x.png", "anim.webp", "again.png")
    assert scan.history.intensities == (1.0,) * 5 and scan.history.ratings is None
    assert scan.read == 5 and scan.skipped == {} and scan.newest(2) == ["first", "a lighthouse at dusk"]
    assert scan_images([outputs(tmp_path / "b")], since=2500).history.prompts == (
        "a harbour in watercolor",
        "a lighthouse at dusk",
        "first",
    )


def test_several_positives_of_one_image_are_one_record_each(tmp_path):
    graph = sd1_graph("one")
    graph["20"] = encode("two")
    graph["21"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["6", 0], "conditioning_2": ["20", 0]}}
    graph["3"]["inputs"]["positive"] = ["21", 0]
    save_png(tmp_path / "a.png", graph, mtime=10)
    scan = scan_images([tmp_path / "a.png"])
    assert scan.history.prompts == ("one", "two") and scan.history.timestamps == (10.0, 10.0)


def test_dedupe_sums_intensities_keeps_the_newest_time_and_averages_ratings(tmp_path):
    folder = outputs(tmp_path)
    scan = scan_images([folder], dedupe=True)
    assert scan.history.prompts == ("second", "a harbour in watercolor", "a lighthouse at dusk", "first")
    assert scan.history.intensities == (1.0, 1.0, 1.0, 2.0) and scan.history.timestamps == (2000.0, 3000.0, 4000.0, 5000.0)
    rated = scan_images([folder], dedupe=True, ratings={"ComfyUI_00001_.png": 5.0, "again.png": 1.0, "anim.webp": 1.0})
    assert rated.history.intensities == (1.0, 1.0, 1.0, 6.0) and rated.history.ratings == (None, None, 1.0, 3.0)


def test_ratings_by_image_key_feed_history_split(tmp_path):
    scan = scan_images([outputs(tmp_path)], ratings={"sub/x.png": 5.0, "ComfyUI_00002_.png": 1.0})
    assert scan.history.ratings == (None, 1.0, 5.0, None, None) and scan.history.intensities == (1.0, 1.0, 5.0, 1.0, 1.0)
    likes, dislikes = split_history(scan.history, 3.0)
    assert (likes.prompts, dislikes.prompts, dislikes.intensities) == (("a harbour in watercolor",), ("second",), (2.0,))
    with pytest.raises(ValueError, match="rating -1"):
        scan_images([tmp_path / "output"], ratings={"sub/x.png": -1})


def test_rescanning_an_unchanged_folder_reads_no_image(tmp_path):
    folder = outputs(tmp_path)
    cache = ScanCache(tmp_path / "scan-cache.json")
    first = scan_images([folder], cache=cache)
    cache.save()
    # garble every image but keep its size and modification time: only a read would notice
    for path in folder.rglob("*.*"):
        info = path.stat()
        path.write_bytes(os.urandom(info.st_size))
        os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert scan_images([folder], cache=cache) == first
    reloaded = ScanCache(tmp_path / "scan-cache.json")
    assert len(reloaded) == 5 and scan_images([folder], cache=reloaded) == first
    os.utime(folder / "again.png", (6000, 6000))  # a changed file is read again
    again = scan_images([folder], cache=reloaded)
    assert again.history.prompts == first.history.prompts[:-1] and again.skipped == {"not an image": 1}


def test_scan_cache_is_bounded_and_ignores_a_foreign_file(tmp_path):
    folder = outputs(tmp_path)
    small = ScanCache(max_entries=2)
    scan_images([folder], cache=small)
    assert len(small) == 2
    oldest, newest = list(small._entries)
    small.get(oldest)  # used: now the most recent
    small.put(("/elsewhere.png", 1, 1), small._entries[newest])  # the least recently used goes
    assert list(small._entries) == [oldest, ("/elsewhere.png", 1, 1)]
    (tmp_path / "junk.json").write_text("[1, 2")
    junk = ScanCache(tmp_path / "junk.json")
    assert len(junk) == 0 and scan_images([folder], cache=junk).read == 5


def test_progress_reports_every_image(tmp_path):
    seen = []
    scan_images([outputs(tmp_path)], progress=lambda done, total: seen.append((done, total)))
    assert seen == [(i, 5) for i in range(1, 6)]


def test_csv_written_from_a_scan_reads_back_with_load_history(tmp_path):
    scan = scan_images([outputs(tmp_path)], ratings={"sub/x.png": 4.5})
    write_history_csv(scan.history, tmp_path / "h.csv")
    loaded = load_history(tmp_path / "h.csv")
    assert (loaded.prompts, loaded.intensities, loaded.timestamps, loaded.ratings) == (
        scan.history.prompts,
        scan.history.intensities,
        scan.history.timestamps,
        scan.history.ratings,
    )
    deduped = scan_images([tmp_path / "output"], dedupe=True).history
    write_history_csv(deduped, tmp_path / "d.csv", intensities=True)
    assert load_history(tmp_path / "d.csv").intensities == deduped.intensities


def test_load_any_history_reads_files_folders_and_images(tmp_path):
    folder = outputs(tmp_path)
    assert load_any_history(folder).prompts[0] == "first"
    assert load_any_history(folder / "sub" / "x.png").prompts == ("a harbour in watercolor",)
    (tmp_path / "h.txt").write_text("from a file\n")
    assert load_any_history(tmp_path / "h.txt").prompts == ("from a file",)
