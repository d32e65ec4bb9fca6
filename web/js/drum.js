// DrUM's page extension: history preview and drop-to-upload on the History Loader, the coreset's
// picks on the Coreset Sampler and Conditioner (and the profile / split / mix nodes), and a labelled
// degree slider. Works in the classic canvas renderer and in the Vue "Nodes 2.0" one: everything it
// draws is a DOM widget, and it never relies on a canvas redraw.
// Prompts are user data: they are only ever set as textContent, never parsed as HTML.

import { api } from "../../../scripts/api.js";
import { app } from "../../../scripts/app.js";
import { loadStrings, t } from "./strings.js";
import { addStyle, PAGE_STYLE } from "./styles.js";

const HISTORY_EXTENSIONS = [".txt", ".csv", ".tsv", ".json", ".jsonl"];
const DEGREE_NODES = new Set(["DrUMDegreeSlider", "DrUMConditioner"]);
const DEGREE_WATCHED = ["degree", "sweep", "count", "start", "end"];
const PANEL_HEIGHT = { min: 90, max: 220 };
const DEGREE_HEIGHT = 58;
const HISTORY_ITEMS = 32; // how far back /history is searched for this workflow's last run
const HISTORY_ATTEMPTS = 8;

/** A new element with a class and, optionally, text (set as textContent). */
function element(tag, className, text) {
  const node = document.createElement(tag);
  node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function formatNumber(value, digits = 2) {
  return Number(value).toFixed(digits);
}

/** A setting as the user typed it: 0.3, 0.5, 1 (at most 3 decimals, no trailing zeros). */
function formatSetting(value) {
  return String(Number(Number(value).toFixed(3)));
}

function toast(severity, detail) {
  app.extensionManager?.toast?.add({ severity, summary: "DrUM", detail, life: severity === "error" ? 8000 : 3000 });
}

/** Adds a DOM widget that is neither saved in the workflow nor sent with the prompt. */
function addPageWidget(node, name, root, options) {
  const widget = node.addDOMWidget(name, name, root, { serialize: false, hideOnZoom: false, ...options });
  widget.serialize = false;
  return widget;
}

/** Calls `onChange` after every assignment to `widget.value`: the widget itself, undo, a script, a loaded workflow. */
function watchValue(widget, onChange) {
  let owner = widget;
  let descriptor;
  while (owner && !(descriptor = Object.getOwnPropertyDescriptor(owner, "value"))) owner = Object.getPrototypeOf(owner);
  let stored = widget.value;
  const get = descriptor?.get ? () => descriptor.get.call(widget) : () => stored;
  const set = descriptor?.set ? (value) => descriptor.set.call(widget, value) : (value) => (stored = value);
  Object.defineProperty(widget, "value", {
    configurable: true,
    enumerable: true,
    get,
    set(value) {
      set(value);
      onChange();
    },
  });
}

/** A read-only panel: a summary line and a scrollable list of (intensity, prompt) rows, in titled sections. */
class PromptPanel {
  constructor(emptyText) {
    this.root = element("div", "drum-panel");
    this.stale = element("div", "drum-stale");
    this.summary = element("div", "drum-summary", emptyText);
    this.list = element("ol", "drum-list");
    this.root.append(this.stale, this.summary, this.list);
    addStyle(this.root, PAGE_STYLE);
    this.version = 0; // bumped by every change: a late answer from /history must not replace a newer one
    this.basis = null; // Map execution id -> inputs (JSON) of the run shown, upstream of the node: what makes it stale
  }

  addTo(node, name, height = PANEL_HEIGHT) {
    this.root.dataset.drumPanel = name;
    addPageWidget(node, name, this.root, { getMinHeight: () => height.min, getMaxHeight: () => height.max });
    return this;
  }

  /** Shows `summary` over sections [{title?, rows: [{prompt, weight}], hidden?}]; `hidden` counts rows not sent by the server. */
  show(summary, sections = []) {
    this.version += 1;
    this.basis = null;
    this.markStale(null);
    this.root.classList.remove("drum-failed", "drum-notice");
    this.summary.textContent = summary;
    const items = sections.flatMap(({ title, rows, hidden = 0 }) => {
      const section = rows.map(({ prompt, weight }) => {
        const item = element("li", "drum-row");
        const intensity = element("span", "drum-weight", formatNumber(weight));
        intensity.title = t("picks.intensity");
        item.append(intensity, element("span", "drum-prompt", String(prompt)));
        return item;
      });
      if (title !== undefined) section.unshift(element("li", "drum-heading", title));
      if (hidden > 0) section.push(element("li", "drum-more", t("history.more", { count: hidden })));
      return section;
    });
    this.list.replaceChildren(...items);
  }

  /** Empties the panel and says what failed (red). */
  fail(text) {
    this.show(text);
    this.root.classList.add("drum-failed");
  }

  /** Empties the panel and says something that is not a run's output (a run that stopped elsewhere, an upload). */
  notice(text) {
    this.show(text);
    this.root.classList.add("drum-notice");
  }

  /** Marks the shown output as from the previous run (dimmed, with `reason`), or clears the mark (null). */
  markStale(reason) {
    this.root.classList.toggle("drum-stale-output", Boolean(reason));
    this.stale.textContent = reason ?? "";
  }
}

/** A history summary {count, source, preview} as a panel section. */
function historySection(summary, title) {
  return { title, rows: summary.preview, hidden: summary.count - summary.preview.length };
}

/** What each node shows of its run's ui output: the panel's widget name, its empty text, and how to show an output. */
const OUTPUT_VIEWS = {
  history: {
    widget: "drum_history_preview",
    empty: "history.empty",
    show(panel, output) {
      const histories = output.drum_history ?? [];
      if (histories.length === 0) return false;
      if (histories.length === 1) {
        const [loaded] = histories;
        panel.show(t("history.summary", { count: loaded.count, source: loaded.source }), [historySection(loaded)]);
        return true;
      }
      // A History Mix sweep: one history per mix, each a run of the nodes after it.
      const mixes = histories.map((history) => formatSetting(history.mix)).join(", ");
      panel.show(
        t("history.mixes", { count: histories.length, mixes }),
        histories.map((history) => historySection(history, t("history.mix", { mix: formatSetting(history.mix), count: history.count }))),
      );
      return true;
    },
  },
  picks: {
    widget: "drum_picks",
    empty: "picks.empty",
    show(panel, output) {
      const conditionings = output.drum_conditioning ?? [];
      const heading = (conditioning) =>
        t("picks.references", {
          family: conditioning.family,
          count: conditioning.references.length,
          degrees: conditioning.degrees.map((value) => formatNumber(value)).join(", "),
        });
      if (conditionings.length === 1) {
        panel.show(heading(conditionings[0]), [{ rows: conditionings[0].references }]);
        return true;
      }
      if (conditionings.length > 1) {
        // A list in (a History Mix sweep): the node ran once per item, in order.
        const sections = conditionings.map((conditioning, index) => ({
          title: t("picks.run", { index: index + 1, heading: heading(conditioning) }),
          rows: conditioning.references,
        }));
        panel.show(t("picks.runs", { count: conditionings.length }), sections);
        return true;
      }
      if (!output.drum_picks) return false;
      panel.show(t("picks.summary", { count: output.drum_picks.length }), [{ rows: output.drum_picks }]);
      return true;
    },
  },
  split: {
    widget: "drum_split",
    empty: "split.empty",
    show(panel, output) {
      const split = output.drum_split?.[0];
      if (!split) return false;
      const counts = { likes: split.likes.count, dislikes: split.dislikes.count };
      panel.show(t("split.summary", counts), [
        historySection(split.likes, t("split.likes", counts)),
        historySection(split.dislikes, t("split.dislikes", counts)),
      ]);
      return true;
    },
  },
  outputs: {
    widget: "drum_outputs",
    empty: "outputs.empty",
    show(panel, output) {
      const read = output.drum_outputs?.[0];
      if (!read) return false;
      const skipped = Object.entries(read.skipped);
      const reasons = skipped.map(([reason, count]) => `${reason} ${count}`).join(", ");
      const counts = { count: read.count, read: read.read, queue: read.queue, folder: read.folder };
      const summary = [t("outputs.summary", counts)];
      summary.push(skipped.length ? t("outputs.skipped", { count: skipped.reduce((sum, [, n]) => sum + n, 0), reasons }) : t("outputs.none_skipped"));
      panel.show(summary.join(" · "), [{ title: t("outputs.newest"), rows: read.newest, hidden: read.count - read.newest.length }]);
      return true;
    },
  },
  profile: {
    widget: "drum_profile",
    empty: "profile.empty",
    show(panel, output) {
      const saved = output.drum_profile?.[0];
      if (!saved) return false;
      panel.show(t("profile.saved", saved));
      return true;
    },
  },
  taste: {
    widget: "drum_taste",
    empty: "taste.empty",
    show(panel, output) {
      const report = output.drum_taste?.[0];
      if (!report) return false;
      const best = report.best;
      const summary = best
        ? t("taste.recommended", { degree: formatNumber(best.degree), edge: formatNumber(best.edge), loss: formatNumber(best.target_loss, 1) })
        : t("taste.none", { control: report.control });
      const rows = report.rows.map((row) => ({
        weight: row.degree,
        prompt: t("taste.row", {
          target: formatNumber(row.target),
          history: formatNumber(row.history),
          control: formatNumber(row.control_history),
          loss: formatNumber(row.target_loss, 1),
          edge: (row.edge >= 0 ? "+" : "") + formatNumber(row.edge),
        }),
      }));
      panel.show(summary, [{ title: t("taste.heading", { count: report.held_out.length, control: report.control }), rows }]);
      return true;
    },
  },
};
const SVG = "http://www.w3.org/2000/svg";

function svgElement(tag, attributes = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  return node;
}

/** The profile map in the panel: a dot per prompt (area by intensity), picks orange and numbered in pick order; a dot's
 * prompt shows on hover (its <title>, and the line under the map). Prompts are set as text only. */
function drawMap(panel, map) {
  const box = svgElement("svg", { class: "drum-map", viewBox: "0 0 100 100", preserveAspectRatio: "xMidYMid meet" });
  box.append(svgElement("rect", { x: 0, y: 0, width: 100, height: 100, class: "drum-map-frame" }));
  const readout = element("div", "drum-map-readout", t("map.hover"));
  const top = Math.max(...map.points.map((point) => point.weight), 1e-9);
  const radius = (point) => (1.2 + 1.8 * (point.weight / top)) * (point.pick ? 1.4 : 1);
  // larger dots first, so a smaller dot is never hidden under a larger one (a pick's dot is larger): every prompt can be
  // hovered; at equal size picks go on top
  const ordered = [...map.points].sort((a, b) => radius(b) - radius(a) || Boolean(a.pick) - Boolean(b.pick));
  for (const point of ordered) {
    const x = 6 + point.x * 88;
    const y = 94 - point.y * 88;
    const dot = svgElement("circle", { cx: x.toFixed(2), cy: y.toFixed(2), r: radius(point) });
    dot.classList.add("drum-map-dot");
    if (point.pick) dot.classList.add("drum-map-pick");
    const label = point.pick ? t("map.pick", { rank: point.pick, prompt: point.prompt }) : point.prompt;
    const title = svgElement("title");
    title.textContent = label;
    dot.append(title);
    dot.dataset.prompt = point.prompt;
    dot.addEventListener("mouseenter", () => (readout.textContent = label));
    box.append(dot);
    if (point.pick) {
      const number = svgElement("text", { x: (x + 2.8).toFixed(2), y: (y - 2).toFixed(2), class: "drum-map-rank" });
      number.textContent = String(point.pick);
      box.append(number);
    }
  }
  box.addEventListener("mouseleave", () => (readout.textContent = t("map.hover")));
  const item = element("li", "drum-map-item");
  item.append(box, readout);
  panel.list.replaceChildren(item);
}

const MAP_VIEW = {
  widget: "drum_map",
  empty: "map.empty",
  height: { min: 240, max: 300 }, // web/js/styles.js: the same height in the Vue renderer
  show(panel, output) {
    const map = output.drum_map?.[0];
    if (!map) return false;
    const summary = t("map.summary", { count: map.count, picks: map.picks });
    // the α of the Preview's degrees input (the Conditioner's degrees output): nothing linked, nothing guessed
    const degrees = map.degrees?.length ? t("map.degree", { degrees: map.degrees.map(formatSetting).join(", ") }) : t("map.no_degree");
    // a list in (a History Mix sweep): one map per history; the page draws the first, the IMAGE output has them all
    const maps = output.drum_map.length;
    panel.show(maps > 1 ? `${t("map.first", { count: maps })} · ${degrees} · ${summary}` : `${degrees} · ${summary}`);
    drawMap(panel, map);
    if (map.hidden > 0) panel.list.append(element("li", "drum-more", t("history.more", { count: map.hidden })));
    return true;
  },
};

const NODE_VIEWS = {
  DrUMProfilePreview: MAP_VIEW,
  DrUMHistoryLoader: OUTPUT_VIEWS.history,
  DrUMOutputsHistory: OUTPUT_VIEWS.outputs,
  DrUMHistoryMix: { ...OUTPUT_VIEWS.history, empty: "mix.empty" }, // no file input: nothing to drop on it
  DrUMHistorySplit: OUTPUT_VIEWS.split,
  DrUMCoresetSampler: OUTPUT_VIEWS.picks,
  DrUMProfileLoad: OUTPUT_VIEWS.picks,
  DrUMConditioner: OUTPUT_VIEWS.picks,
  DrUMProfileSave: OUTPUT_VIEWS.profile,
  DrUMTasteCheck: OUTPUT_VIEWS.taste,
};

/** node → {view, panel} for every node with an output panel. */
const panels = new WeakMap();

/** Shows a run's ui `output` on `node`'s panel; `prompt` (API format, execution ids) is that run's graph when known. */
function showOutput(node, output, prompt) {
  const entry = panels.get(node);
  if (!entry || !output || !entry.view.show(entry.panel, output)) return;
  setBasis(node, entry.panel, prompt);
}

function nodeTitle(node) {
  return node?.title || node?.constructor?.title || node?.comfyClass || "?";
}

/** The run failed at `error.node_id`: that node's panel says why (red); the other panels say where the run stopped. */
function showFailure(node, executionId, error) {
  const entry = panels.get(node);
  if (!entry) return;
  const failedAt = findByExecutionId(String(error.node_id ?? ""))?.node;
  const where = failedAt ? nodeTitle(failedAt) : (error.node_type ?? "?");
  const message = String(error.exception_message ?? "").trim();
  if (String(error.node_id) === executionId) entry.panel.fail(t("run.failed_here", { message }));
  else entry.panel.notice(t("run.stopped", { node: where }));
}

function setUpOutputPanel(node, view) {
  const panel = new PromptPanel(t(view.empty)).addTo(node, view.widget, view.height);
  panels.set(node, { view, panel });
  node.onExecuted = chain(node.onExecuted, (output) => showOutput(node, output));
  return panel;
}

/** [{node, executionId}] of every node with an output panel in the open workflow, subgraphs included (their
 * execution ids are the ids of the subgraph nodes on the way down and the node's own, joined by ":"). */
function panelEntries() {
  const found = [];
  const visit = (graph, prefix, depth) => {
    for (const node of graph?.nodes ?? []) {
      const executionId = `${prefix}${node.id}`;
      if (panels.has(node)) found.push({ node, executionId });
      if (node.subgraph && depth < 16) visit(node.subgraph, `${executionId}:`, depth + 1);
    }
  };
  visit(app.rootGraph ?? app.graph, "", 0);
  return found;
}

function findByExecutionId(executionId) {
  return panelEntries().find((entry) => entry.executionId === executionId);
}

/** Execution id -> inputs (JSON) of node `id` and every node upstream of it in the API-format `prompt`. */
function upstream(prompt, id) {
  const nodes = new Map();
  const visit = (nodeId) => {
    if (nodes.has(nodeId) || !prompt[nodeId]) return;
    nodes.set(nodeId, JSON.stringify([prompt[nodeId].class_type, prompt[nodeId].inputs ?? {}]));
    for (const value of Object.values(prompt[nodeId].inputs ?? {})) if (Array.isArray(value) && typeof value[0] === "string") visit(value[0]);
  };
  visit(String(id));
  return nodes;
}

/** The API-format graph of the open workflow (what Run would queue), or null. */
async function currentPrompt() {
  try {
    return (await app.graphToPrompt()).output;
  } catch (error) {
    console.warn("DrUM: could not read the graph", error);
    return null;
  }
}

/** Remembers what the shown output was computed from: the run's graph when known, else the graph as it is now. */
async function setBasis(node, panel, prompt) {
  const version = panel.version;
  const executionId = panelEntries().find((entry) => entry.node === node)?.executionId ?? String(node.id);
  const graph = prompt ?? (await currentPrompt());
  if (!graph || panel.version !== version) return;
  panel.basis = upstream(graph, executionId);
  panel.basisId = executionId;
}

/** Why `panel`'s output is from the previous run (a node upstream changed, was added or removed), or null. */
function staleReason(panel, prompt) {
  const now = upstream(prompt, panel.basisId);
  for (const [id, inputs] of now) {
    if (panel.basis.get(id) === inputs) continue;
    const changed = findNodeForExecutionId(id);
    return t("panel.stale", { node: changed ? nodeTitle(changed) : id });
  }
  for (const id of panel.basis.keys()) if (!now.has(id)) return t("panel.stale_removed");
  return null;
}

/** The graph node of execution id "a:b:c" (subgraph nodes a, b; node c), any type. */
function findNodeForExecutionId(executionId) {
  let graph = app.rootGraph ?? app.graph;
  let node = null;
  for (const id of executionId.split(":")) {
    node = graph?.getNodeById?.(id) ?? graph?.nodes?.find((candidate) => String(candidate.id) === id);
    graph = node?.subgraph;
  }
  return node;
}

let staleCheck = null;
/** After any change to the graph: panels whose inputs changed since their run say so (debounced). */
function checkStaleSoon() {
  clearTimeout(staleCheck);
  staleCheck = setTimeout(async () => {
    const entries = panelEntries().filter(({ node }) => panels.get(node).panel.basis);
    if (entries.length === 0) return;
    const prompt = await currentPrompt();
    if (!prompt) return;
    for (const { node } of entries) {
      const { panel } = panels.get(node);
      if (panel.basis) panel.markStale(staleReason(panel, prompt));
    }
  }, 150);
}

/**
 * Refills the panels from the last run of the open workflow (outputs live in the page only, so a reload,
 * undo or tab switch loses them): the newest /history entry whose workflow has this graph's id, for
 * nodes that are still of the same type, and only where nothing newer was shown meanwhile.
 */
async function refillFromHistory() {
  const graph = app.rootGraph ?? app.graph;
  const entries = panelEntries();
  if (!graph?.id || entries.length === 0) return;
  const versions = new Map(entries.map(({ node }) => [node, panels.get(node).panel.version]));
  const response = await api.fetchApi(`/history?max_items=${HISTORY_ITEMS}`);
  if (!response.ok) return;
  const runs = Object.values(await response.json()).reverse();
  const last = runs.find((run) => run.prompt?.[3]?.extra_pnginfo?.workflow?.id === graph.id);
  if (!last) return;
  const error = last.status?.messages?.find(([type]) => type === "execution_error")?.[1];
  for (const { node, executionId } of entries) {
    if (panels.get(node).panel.version !== versions.get(node) || last.prompt[2]?.[executionId]?.class_type !== node.comfyClass) continue;
    const output = last.outputs?.[executionId];
    if (output) showOutput(node, output, last.prompt[2]);
    else if (error) showFailure(node, executionId, error);
  }
  checkStaleSoon();
}

/** The API-format node `id` with every node upstream of it, as one string: equal strings, equal cached result. */
function upstreamSignature(prompt, id) {
  return JSON.stringify([...upstream(prompt, id)].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/**
 * ComfyUI 0.3.75 sends nothing for a node it takes from its cache (newer ones send `executed` with the cached
 * output: those panels are filled by it and never come here): after run `promptId`, panels that got nothing
 * show the output of the newest earlier run in /history in which that node and everything upstream were the same.
 */
async function fillCachedPanels(promptId, shown) {
  const waiting = panelEntries().filter(({ executionId }) => !shown.has(executionId));
  if (waiting.length === 0) return;
  const versions = new Map(waiting.map(({ node }) => [node, panels.get(node).panel.version]));
  let runs = [];
  let current;
  // The server files the run in its history just after it announces the end: ask again for a moment.
  for (let attempt = 0; attempt < HISTORY_ATTEMPTS && !current; attempt += 1) {
    if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, 250));
    const response = await api.fetchApi(`/history?max_items=${HISTORY_ITEMS}`);
    if (!response.ok) return;
    runs = Object.values(await response.json()).reverse();
    current = runs.find((run) => run.prompt?.[1] === promptId)?.prompt[2];
  }
  if (!current) return;
  for (const { node, executionId } of waiting) {
    if (panels.get(node).panel.version !== versions.get(node) || current[executionId]?.class_type !== node.comfyClass) continue;
    const signature = upstreamSignature(current, executionId);
    const earlier = runs.find(
      (run) => run.prompt?.[1] !== promptId && run.outputs?.[executionId] && upstreamSignature(run.prompt?.[2] ?? {}, executionId) === signature
    );
    if (earlier) showOutput(node, earlier.outputs[executionId], current);
  }
}

/** Follows the running prompt: on success, panels of cached nodes are filled; on execution_error, panels that got nothing
 * say where the run stopped (the failing node's panel says why). */
function followRuns() {
  let running = null;
  api.addEventListener("execution_start", ({ detail }) => {
    running = { promptId: detail.prompt_id, shown: new Set() };
  });
  api.addEventListener("executed", ({ detail }) => {
    if (running?.promptId === detail.prompt_id) running.shown.add(String(detail.node ?? detail.display_node));
  });
  api.addEventListener("execution_success", ({ detail }) => {
    if (running?.promptId !== detail.prompt_id) return;
    fillCachedPanels(running.promptId, running.shown).catch((error) => console.warn("DrUM: could not read /history", error));
  });
  api.addEventListener("execution_error", ({ detail }) => {
    if (running?.promptId !== detail.prompt_id) return;
    for (const { node, executionId } of panelEntries()) if (!running.shown.has(executionId)) showFailure(node, executionId, detail);
  });
  api.addEventListener("graphChanged", checkStaleSoon);
}

function isHistoryFile(file) {
  const name = file.name.toLowerCase();
  return HISTORY_EXTENSIONS.some((extension) => name.endsWith(extension));
}

/** POSTs `file` to ComfyUI's input folder; returns its name there (ComfyUI renames a different file of the same name). */
async function uploadToInput(file) {
  const body = new FormData();
  body.append("image", file);
  body.append("type", "input");
  const response = await api.fetchApi("/upload/image", { method: "POST", body });
  if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
  const { name, subfolder } = await response.json();
  return subfolder ? `${subfolder}/${name}` : name;
}

/** The pack's check of an uploaded file: {ok: true, count} or {ok: false, problem} (plain words, no server paths). */
async function checkHistory(name) {
  const response = await api.fetchApi("/drum/history/check", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ name }),
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) return { ok: false, problem: answer.error ?? `${response.status} ${response.statusText}` };
  return answer;
}

/** Uploads history files; each is checked by the pack, and one it can read is selected in the node's file combo.
 * The panel says what happened, in place of what it showed: one message, red only for a refused file. */
async function uploadHistory(node, panel, files) {
  const combo = node.widgets.find((widget) => widget.name === "file");
  for (const file of files) {
    if (!isHistoryFile(file)) {
      panel.fail(t("history.unsupported", { name: file.name, extensions: HISTORY_EXTENSIONS.join(", ") }));
      continue;
    }
    panel.notice(t("history.uploading", { name: file.name }));
    try {
      const name = await uploadToInput(file);
      const checked = await checkHistory(name);
      if (!checked.ok) {
        panel.fail(t("history.refused", { problem: checked.problem }));
        continue;
      }
      const values = combo.options.values;
      if (Array.isArray(values) && !values.includes(name)) values.push(name);
      combo.value = name;
      combo.callback?.(name);
      panel.notice(t("history.uploaded", { name, count: checked.count }));
      toast("success", t("history.uploaded", { name, count: checked.count }));
    } catch (error) {
      panel.fail(t("history.upload_failed", { name: file.name, reason: error.message }));
    }
  }
  node.setDirtyCanvas(true, true);
}

/** The "Upload a history file…" button (added before the preview panel, which `uploadHistory` reports to). */
function addUploadButton(node) {
  const picker = Object.assign(document.createElement("input"), { type: "file", accept: HISTORY_EXTENSIONS.join(","), multiple: false });
  picker.addEventListener("change", () => uploadHistory(node, panels.get(node).panel, Array.from(picker.files ?? [])));
  const button = node.addWidget("button", "drum_upload", null, () => picker.click(), { serialize: false });
  button.label = t("history.choose");
  button.serialize = false;
}

/** Files dropped on the node or on its preview panel are uploaded as histories. */
function acceptDroppedHistories(node, panel) {
  const carriesFiles = (event) => Array.from(event.dataTransfer?.items ?? []).some((item) => item.kind === "file");
  const historyFiles = (event) => Array.from(event.dataTransfer?.files ?? []).filter(isHistoryFile);
  // The app (canvas, or the Vue node's drop zone) asks the node under the pointer first: accept any file
  // while dragging, then only history files on drop.
  node.onDragOver = carriesFiles;
  node.onDragDrop = async (event) => {
    const files = historyFiles(event);
    if (files.length === 0) return false;
    await uploadHistory(node, panel, files);
    return true;
  };
  // The panel is an element above the canvas: files dropped on it never reach the canvas's handlers.
  panel.root.addEventListener("dragover", (event) => carriesFiles(event) && event.preventDefault());
  panel.root.addEventListener("drop", (event) => {
    const files = historyFiles(event);
    if (files.length === 0) return;
    event.preventDefault();
    event.stopPropagation();
    uploadHistory(node, panel, files);
  });
}

/** Replaces the node's "degree" number widget (kept, hidden, as the saved value) by a slider labelled target ↔ history. */
function setUpDegree(node) {
  const degree = node.widgets?.find((widget) => widget.name === "degree");
  if (!degree) return;
  const { min = 0, max = 1, step2, round } = degree.options ?? {};
  const step = step2 ?? round ?? 0.01;
  const widgetValue = (name) => node.widgets.find((widget) => widget.name === name)?.value;

  const root = element("div", "drum-degree");
  const row = element("div", "drum-degree-row");
  const slider = Object.assign(document.createElement("input"), { type: "range", min, max, step, className: "drum-degree-slider" });
  row.append(element("span", "drum-degree-end", t("degree.target")), slider, element("span", "drum-degree-end", t("degree.history")));
  const readout = element("label", "drum-degree-value", `${t("degree.value")} `);
  const number = Object.assign(document.createElement("input"), { type: "number", min, max, step, className: "drum-degree-number" });
  const sweep = element("span", "drum-degree-sweep");
  readout.append(number, sweep);
  root.append(row, readout);
  addStyle(root, PAGE_STYLE);

  // The slider mirrors the widgets: they may change from elsewhere (undo, workflow load, a script).
  const refresh = () => {
    const value = formatNumber(degree.value);
    if (slider.value !== String(degree.value)) slider.value = degree.value;
    if (document.activeElement !== number && number.value !== value) number.value = value;
    const sweeping = widgetValue("sweep") === true;
    const summary = sweeping
      ? t("degree.sweep", { count: widgetValue("count"), start: formatNumber(widgetValue("start")), end: formatNumber(widgetValue("end")) })
      : "";
    if (sweep.textContent !== summary) sweep.textContent = summary;
    // A linked "degrees" input (DrUM Degree Slider into the Conditioner) overrides this slider.
    const overridden = node.inputs?.some((input) => input.name === "degrees" && input.link != null) ?? false;
    root.classList.toggle("drum-inactive", sweeping || overridden);
  };
  const set = (value) => {
    const clamped = Math.min(max, Math.max(min, Number(value)));
    if (Number.isNaN(clamped)) return;
    degree.value = clamped;
    degree.callback?.(clamped);
    node.setDirtyCanvas(true, true);
    checkStaleSoon();
  };
  slider.addEventListener("input", () => set(slider.value));
  number.addEventListener("change", () => set(number.value));
  for (const widget of node.widgets.filter((widget) => DEGREE_WATCHED.includes(widget.name))) watchValue(widget, refresh);
  node.onConnectionsChange = chain(node.onConnectionsChange, refresh);
  degree.hidden = true;
  addPageWidget(node, "drum_degree", root, { getMinHeight: () => DEGREE_HEIGHT, getMaxHeight: () => DEGREE_HEIGHT });
  refresh();
}

/** Grows the node to hold all its widgets (page widgets are added after the size was computed, or a saved size is too small). */
function fitWidgets(node) {
  const [width, height] = node.computeSize();
  if (width > node.size[0] || height > node.size[1]) node.setSize([Math.max(width, node.size[0]), Math.max(height, node.size[1])]);
}

/** `first` then `then`, both with the same arguments (keeps other extensions' callbacks). */
function chain(first, then) {
  return function (...args) {
    const result = first?.apply(this, args);
    then.apply(this, args);
    return result;
  };
}

function currentLocale() {
  return app.extensionManager?.setting?.get("Comfy.Locale") ?? navigator.language;
}

app.registerExtension({
  name: "DrUM.Page",
  async init() {
    try {
      await loadStrings(currentLocale());
    } catch (error) {
      console.warn("DrUM: could not load the texts from /i18n", error);
    }
  },
  setup() {
    followRuns();
  },
  nodeCreated(node) {
    const type = node.comfyClass;
    if (DEGREE_NODES.has(type)) setUpDegree(node);
    if (type === "DrUMHistoryLoader") addUploadButton(node);
    const view = NODE_VIEWS[type];
    if (view) {
      const panel = setUpOutputPanel(node, view);
      if (type === "DrUMHistoryLoader") acceptDroppedHistories(node, panel);
    }
    if (type?.startsWith("DrUM")) fitWidgets(node);
  },
  loadedGraphNode(node) {
    if (node.comfyClass?.startsWith("DrUM")) fitWidgets(node);
  },
  // Newer frontends: outputs put back on the graph (e.g. a finished job opened from the queue).
  onNodeOutputsUpdated(nodeOutputs) {
    const entries = new Map(panelEntries().map((entry) => [entry.executionId, entry.node]));
    for (const [id, output] of Object.entries(nodeOutputs ?? {})) {
      const node = entries.get(id);
      if (node) showOutput(node, output);
    }
  },
  async afterConfigureGraph() {
    try {
      await refillFromHistory();
    } catch (error) {
      console.warn("DrUM: could not refill the panels from /history", error);
    }
  },
});
