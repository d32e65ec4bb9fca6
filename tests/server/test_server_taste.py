"""Taste controls in a real ComfyUI server: coreset mode, recency half-life, likes / dislikes, history mix.

Each graph is a template's API copy on the tiny SD1 checkpoint (support.workflows.tiny_template_graph). The TEST-ONLY probe
(tests/support/test_nodes) in front of a sampler input reports the conditioning it receives; the
conditioner's and the sampler's UI entries list the references and intensities that reach PeCA.
"""

import copy
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from PIL import Image
from support.workflows import tiny_template_graph

pytestmark = pytest.mark.server

PROBE_KEYS = 200  # probes get ids from here on


def keys_of(graph: dict, class_type: str) -> list[str]:
    return sorted((key for key, node in graph.items() if node["class_type"] == class_type), key=int)


def probe(graph: dict, sampler: str, side: str = "positive") -> str:
    """Puts the probe between the sampler's `side` input and its source; returns the probe's id."""
    key = str(PROBE_KEYS + len(keys_of(graph, "DrUMTestConditioningProbe")))
    inputs = graph[sampler]["inputs"]
    graph[key] = {"class_type": "DrUMTestConditioningProbe", "inputs": {"conditioning": inputs[side]}}
    inputs[side] = [key, 0]
    return key


def run(server, graph: dict):
    entry = server.run(graph)
    assert entry.status == "success", entry.error or entry.messages
    return entry


def received_per_run(entry, probe_key: str) -> list[float]:
    """The mean |token| of the conditioning the probe passed on, per run of it (one per item of a list input)."""
    return [report["token_mean_abs"] for report in entry.outputs[probe_key]["drum_probe"]]


def received(entry, probe_key: str) -> float:
    """The mean |token| of the conditioning the probe passed on (one conditioning entry)."""
    (value,) = received_per_run(entry, probe_key)
    return value


def references_per_run(entry, conditioner: str) -> list[list[tuple[str, float]]]:
    """(prompt, intensity) of every reference the conditioner fused, as PeCA received them, per run of it."""
    return [[(r["prompt"], r["weight"]) for r in run["references"]] for run in entry.outputs[conditioner]["drum_conditioning"]]


def references(entry, conditioner: str) -> list[tuple[str, float]]:
    """(prompt, intensity) of every reference the conditioner fused in its one run."""
    (run,) = references_per_run(entry, conditioner)
    return run


def picks(entry, sampler: str) -> list[tuple[str, float]]:
    return [(p["prompt"], p["weight"]) for p in entry.outputs[sampler]["drum_picks"]]


def pixels(entry, server) -> list[np.ndarray]:
    return [np.asarray(Image.open(path)) for path in entry.images(server.base / "output")]


def saved(entry, server, node: str) -> np.ndarray:
    """The one image Save Image `node` wrote."""
    (image,) = saved_all(entry, server, node)
    return image


def saved_all(entry, server, node: str) -> list[np.ndarray]:
    """Every image Save Image `node` wrote, in the order it wrote them (once per item of a list)."""
    return [
        np.asarray(Image.open(server.base / "output" / image.get("subfolder", "") / image["filename"]))
        for image in entry.outputs[node]["images"]
    ]


def rated(text: str) -> list[tuple[str, float]]:
    """The History Loader's text box as (prompt, rating)."""
    return [(prompt, float(rating)) for prompt, rating in (line.rsplit("\t", 1) for line in text.splitlines() if line.strip())]


def test_dislikes_template_personalizes_the_negative_side(server):
    graph = tiny_template_graph("drum_dislikes")
    (split,) = keys_of(graph, "DrUMHistorySplit")
    (sampler,) = keys_of(graph, "KSampler")
    negative = graph[sampler]["inputs"]["negative"][0]
    positive_probe, negative_probe = probe(graph, sampler), probe(graph, sampler, "negative")
    history = rated(graph[graph[split]["inputs"]["history"][0]]["inputs"]["text"])
    threshold = graph[split]["inputs"]["threshold"]
    entry = run(server, graph)
    assert len(pixels(entry, server)) == 1
    # documented rule: rating < threshold -> dislike of intensity threshold - rating; the rest are likes with their rating
    assert references(entry, negative) == [(p, threshold - r) for p, r in history if r < threshold]
    positive = graph[positive_probe]["inputs"]["conditioning"][0]
    assert set(references(entry, positive)) <= {(p, r) for p, r in history if r >= threshold}

    no_dislikes = copy.deepcopy(graph)
    no_dislikes[split]["inputs"]["threshold"] = 0.0  # every rating >= 0: no dislikes, the negative is CLIP Text Encode's
    plain = run(server, no_dislikes)
    assert references(plain, negative) == []
    assert received(plain, negative_probe) != received(entry, negative_probe)
    assert received(plain, positive_probe) != received(entry, positive_probe)  # the likes now hold every prompt
    assert not np.array_equal(pixels(plain, server)[0], pixels(entry, server)[0])


def test_style_mix_template_sweeps_from_a_to_b_and_t0_is_exactly_a(server):
    """One History Mix set to sweep 0, 0.5, 1: its list output runs the conditioner, the sampler, the decode and the save
    once per mix, in order; the ends are exactly histories A and B, the middle the documented blend."""
    graph = tiny_template_graph("drum_style_mix")
    (mix,) = keys_of(graph, "DrUMHistoryMix")
    (sampler,) = keys_of(graph, "KSampler")
    (saver,) = keys_of(graph, "SaveImage")
    settings = graph[mix]["inputs"]
    assert (settings["sweep"], settings["start"], settings["end"], settings["count"]) == (True, 0.0, 1.0, 3)
    sweep_probe = probe(graph, sampler)
    conditioner = graph[sweep_probe]["inputs"]["conditioning"][0]
    side_a, side_b = settings["history_a"][0], settings["history_b"][0]
    for loader in keys_of(graph, "DrUMHistoryLoader"):  # the same histories, but not from the cache of an earlier
        graph[loader]["inputs"]["text"] += "\n"  # test's run of the template, which would leave out the upstream ui
    entry = run(server, graph)
    assert [history["mix"] for history in entry.outputs[mix]["drum_history"]] == [0.0, 0.5, 1.0]
    images = saved_all(entry, server, saver)
    assert len(images) == 3 and len(pixels(entry, server)) == 3 and not np.array_equal(images[0], images[2])
    a, b = picks(entry, side_a), picks(entry, side_b)
    runs = references_per_run(entry, conditioner)
    assert len(runs) == 3 and runs[0] == a and runs[2] == b
    total_a, total_b = sum(w for _, w in a), sum(w for _, w in b)
    common = 0.5 * total_a + 0.5 * total_b  # both sides scaled to one total, then weighted 1 - t and t
    expected = [(p, 0.5 * w * common / total_a) for p, w in a] + [(p, 0.5 * w * common / total_b) for p, w in b]
    assert [p for p, _ in runs[1]] == [p for p, _ in expected]
    assert [w for _, w in runs[1]] == pytest.approx([w for _, w in expected], rel=1e-12)
    values = received_per_run(entry, sweep_probe)
    assert len(values) == 3 and len(set(values)) == 3, values

    direct = copy.deepcopy(graph)  # history A straight into the conditioner: the first mix's conditioning and image
    direct[conditioner]["inputs"]["history"] = [side_a, 0]
    again = run(server, direct)
    assert received(again, sweep_probe) == values[0]
    assert np.array_equal(saved(again, server, saver), images[0])


DATED = [  # prompt, rating, days before the newest
    ("watercolor painting of a quiet harbour at dawn", 5, 0),
    ("watercolor of a fishing village with red roofs", 4, 7),
    ("loose watercolor of rolling hills under a big sky", 4, 14),
    ("oil painting of a stormy sea with a small boat", 2, 21),
    ("charcoal portrait of an old fisherman", 3, 28),
    ("pastel drawing of a cat on a windowsill", 3, 35),
    ("ink sketch of an old lighthouse", 4, 42),
    ("watercolor still life of lemons and a blue jug", 5, 49),
]


def test_coreset_mode_and_half_life_change_the_picks_and_the_conditioning(server):
    newest = datetime(2024, 6, 1, tzinfo=timezone.utc)
    rows = [f"{p},{r},{(newest - timedelta(days=d)).isoformat()}" for p, r, d in DATED]
    (server.base / "input" / "dated_history.csv").write_text("prompt,rating,timestamp\n" + "\n".join(rows) + "\n")
    graph = tiny_template_graph("drum_sd15")
    (loader,) = keys_of(graph, "DrUMHistoryLoader")
    (coreset,) = keys_of(graph, "DrUMCoresetSampler")
    (conditioner,) = keys_of(graph, "DrUMConditioner")
    (sampler,) = keys_of(graph, "KSampler")
    graph[loader]["inputs"].update(file="dated_history.csv", text="")
    graph[coreset]["inputs"].update(ratio=0.5)
    graph[coreset]["inputs"].pop("mode", None)  # a workflow saved before the new inputs: the defaults apply
    graph[coreset]["inputs"].pop("half_life_days", None)
    probe_key = probe(graph, sampler)

    published = run(server, graph)
    diverse_graph = copy.deepcopy(graph)
    diverse_graph[coreset]["inputs"]["mode"] = "diverse"
    diverse = run(server, diverse_graph)
    first, second = picks(published, coreset), picks(diverse, coreset)
    assert len(first) == len(second) == 4 and first[0] == second[0]  # the same first pick, then farthest-first
    assert {p for p, _ in first} != {p for p, _ in second}
    assert received(published, probe_key) != received(diverse, probe_key)

    everything = copy.deepcopy(graph)
    everything[coreset]["inputs"].update(ratio=1.0, half_life_days=0.0)
    recent = copy.deepcopy(everything)
    recent[coreset]["inputs"]["half_life_days"] = 7.0
    plain, decayed = run(server, everything), run(server, recent)
    assert dict(picks(plain, coreset)) == {p: float(r) for p, r, _ in DATED}
    expected = {p: r * 0.5 ** (d / 7) for p, r, d in DATED}  # intensity x 0.5^(age / half-life)
    assert dict(picks(decayed, coreset)) == expected
    assert dict(references(decayed, conditioner)) == expected  # the decayed intensities are what PeCA gets
    assert received(plain, probe_key) != received(decayed, probe_key)
