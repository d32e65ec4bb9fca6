// DrUM's page extension: history preview and drop-to-upload on the History Loader, the coreset's
// picks on the Coreset Sampler and Conditioner (and the profile / split / mix nodes), and a labelled
// degree slider. Works in the classic canvas renderer and in the Vue "Nodes 2.0" one: everything it
// draws is a DOM widget, and it never relies on a canvas redraw.
// Prompts are user data: they are only ever set as textContent, never parsed as HTML.

import { api } from "../../../scripts/api.js";
import { app } from "../../../scripts/app.js";
import { loadStrings, t } from "./strings.js";

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
    this.summary = element("div", "drum-summary", emptyText);
    this.list = element("ol", "drum-list");
    this.root.append(this.summary, this.list);
    this.version = 0; // bumped by every change: a late answer from /history must not replace a newer one
  }

  addTo(node, name) {
    this.root.dataset.drumPanel = name;
    addPageWidget(node, name, this.root, { getMinHeight: () => PANEL_HEIGHT.min, getMaxHeight: () => PANEL_HEIGHT.max });
    return this;
  }

  /** Shows `summary` over sections [{title?, rows: [{prompt, weight}], hidden?}]; `hidden` counts rows not sent by the server. */
  show(summary, sections = []) {
    this.version += 1;
    this.root.classList.remove("drum-failed");
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

  /** Empties the panel and says the run failed. */
  fail(text) {
    this.show(text);
    this.root.classList.add("drum-failed");
  }

  status(text) {
    this.version += 1;
    this.summary.textContent = text;
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
      const loaded = output.drum_history?.[0];
      if (!loaded) return false;
      panel.show(t("history.summary", { count: loaded.count, source: loaded.source }), [historySection(loaded)]);
      return true;
    },
  },
  picks: {
    widget: "drum_picks",
    empty: "picks.empty",
    show(panel, output) {
      const conditioning = output.drum_conditioning?.[0];
      if (conditioning) {
        const degrees = conditioning.degrees.map((value) => formatNumber(value)).join(", ");
        const summary = t("picks.references", { family: conditioning.family, count: conditioning.references.length, degrees });
        panel.show(summary, [{ rows: conditioning.references }]);
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
};
const NODE_VIEWS = {
  DrUMHistoryLoader: OUTPUT_VIEWS.history,
  DrUMHistoryMix: OUTPUT_VIEWS.history,
  DrUMHistorySplit: OUTPUT_VIEWS.split,
  DrUMCoresetSampler: OUTPUT_VIEWS.picks,
  DrUMProfileLoad: OUTPUT_VIEWS.picks,
  DrUMConditioner: OUTPUT_VIEWS.picks,
  DrUMProfileSave: OUTPUT_VIEWS.profile,
};

/** node → {view, panel} for every node with an output panel. */
const panels = new WeakMap();

function showOutput(node, output) {
  const entry = panels.get(node);
  if (entry && output) entry.view.show(entry.panel, output);
}

function showFailure(node, error) {
  const message = String(error.exception_message ?? "").trim();
  panels.get(node)?.panel.fail(t("run.failed", { node: error.node_type ?? "?", id: error.node_id ?? "?", message }));
}

function setUpOutputPanel(node, view) {
  const panel = new PromptPanel(t(view.empty)).addTo(node, view.widget);
  panels.set(node, { view, panel });
  node.onExecuted = chain(node.onExecuted, (output) => showOutput(node, output));
  return panel;
}

/** The nodes of the open graph (its root level) that have an output panel. */
function panelNodes() {
  return ((app.rootGraph ?? app.graph)?.nodes ?? []).filter((node) => panels.has(node));
}

/**
 * Refills the panels from the last run of the open workflow (outputs live in the page only, so a reload,
 * undo or tab switch loses them): the newest /history entry whose workflow has this graph's id, for
 * nodes that are still of the same type, and only where nothing newer was shown meanwhile.
 */
async function refillFromHistory() {
  const graph = app.rootGraph ?? app.graph;
  const nodes = panelNodes();
  if (!graph?.id || nodes.length === 0) return;
  const versions = new Map(nodes.map((node) => [node, panels.get(node).panel.version]));
  const response = await api.fetchApi(`/history?max_items=${HISTORY_ITEMS}`);
  if (!response.ok) return;
  const entries = Object.values(await response.json()).reverse();
  const last = entries.find((entry) => entry.prompt?.[3]?.extra_pnginfo?.workflow?.id === graph.id);
  if (!last) return;
  const error = last.status?.messages?.find(([type]) => type === "execution_error")?.[1];
  for (const node of nodes) {
    if (panels.get(node).panel.version !== versions.get(node) || last.prompt[2]?.[node.id]?.class_type !== node.comfyClass) continue;
    const output = last.outputs?.[node.id];
    if (output) showOutput(node, output);
    else if (error) showFailure(node, error);
  }
}

/** The API-format node `id` with every node upstream of it, as one string: equal strings, equal cached result. */
function upstreamSignature(prompt, id) {
  const nodes = new Map();
  const visit = (nodeId) => {
    if (nodes.has(nodeId) || !prompt[nodeId]) return;
    nodes.set(nodeId, prompt[nodeId]);
    for (const value of Object.values(prompt[nodeId].inputs ?? {})) if (Array.isArray(value) && typeof value[0] === "string") visit(value[0]);
  };
  visit(String(id));
  return JSON.stringify([...nodes].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/**
 * ComfyUI sends nothing for a node it takes from its cache: after run `promptId`, panels that got nothing
 * show the output of the newest earlier run in /history in which that node and everything upstream were the same.
 */
async function fillCachedPanels(promptId, shown) {
  const waiting = panelNodes().filter((node) => !shown.has(String(node.id)));
  if (waiting.length === 0) return;
  const versions = new Map(waiting.map((node) => [node, panels.get(node).panel.version]));
  let entries = [];
  let current;
  // The server files the run in its history just after it announces the end: ask again for a moment.
  for (let attempt = 0; attempt < HISTORY_ATTEMPTS && !current; attempt += 1) {
    if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, 250));
    const response = await api.fetchApi(`/history?max_items=${HISTORY_ITEMS}`);
    if (!response.ok) return;
    entries = Object.values(await response.json()).reverse();
    current = entries.find((entry) => entry.prompt?.[1] === promptId)?.prompt[2];
  }
  if (!current) return;
  for (const node of waiting) {
    if (panels.get(node).panel.version !== versions.get(node) || current[node.id]?.class_type !== node.comfyClass) continue;
    const signature = upstreamSignature(current, node.id);
    const earlier = entries.find(
      (entry) => entry.prompt?.[1] !== promptId && entry.outputs?.[node.id] && upstreamSignature(entry.prompt?.[2] ?? {}, node.id) === signature
    );
    if (earlier) showOutput(node, earlier.outputs[node.id]);
  }
}

/** Follows the running prompt: on success, panels of cached nodes are filled; on execution_error, panels that got nothing are cleared. */
function followRuns() {
  let running = null;
  api.addEventListener("execution_start", ({ detail }) => {
    running = { promptId: detail.prompt_id, shown: new Set() };
  });
  api.addEventListener("executed", ({ detail }) => {
    if (running?.promptId === detail.prompt_id) running.shown.add(String(detail.display_node ?? detail.node));
  });
  api.addEventListener("execution_success", ({ detail }) => {
    if (running?.promptId !== detail.prompt_id) return;
    fillCachedPanels(running.promptId, running.shown).catch((error) => console.warn("DrUM: could not read /history", error));
  });
  api.addEventListener("execution_error", ({ detail }) => {
    if (running?.promptId !== detail.prompt_id) return;
    for (const node of panelNodes()) if (!running.shown.has(String(node.id))) showFailure(node, detail);
  });
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

/** Uploads history files and selects the last one in the node's file combo. */
async function uploadHistory(node, panel, files) {
  const combo = node.widgets.find((widget) => widget.name === "file");
  for (const file of files) {
    if (!isHistoryFile(file)) {
      toast("warn", t("history.unsupported", { name: file.name, extensions: HISTORY_EXTENSIONS.join(", ") }));
      continue;
    }
    panel.status(t("history.uploading", { name: file.name }));
    try {
      const name = await uploadToInput(file);
      const values = combo.options.values;
      if (Array.isArray(values) && !values.includes(name)) values.push(name);
      combo.value = name;
      combo.callback?.(name);
      panel.status(t("history.uploaded", { name }));
      toast("success", t("history.uploaded", { name }));
    } catch (error) {
      panel.status(t("history.upload_failed", { name: file.name, reason: error.message }));
      toast("error", t("history.upload_failed", { name: file.name, reason: error.message }));
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
    const link = Object.assign(document.createElement("link"), { rel: "stylesheet", href: new URL("../css/drum.css", import.meta.url).href });
    document.head.append(link);
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
    const graph = app.rootGraph ?? app.graph;
    for (const [id, output] of Object.entries(nodeOutputs ?? {})) {
      const node = graph?.getNodeById(id);
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
