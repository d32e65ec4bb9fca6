// DrUM's page extension: history preview and drop-to-upload on the History Loader, the coreset's
// picks on the Coreset Sampler and Conditioner, and a labelled degree slider.
// Prompts are user data: they are only ever set as textContent, never parsed as HTML.

import { api } from "../../../scripts/api.js";
import { app } from "../../../scripts/app.js";
import { loadLocale, t } from "./strings.js";

const HISTORY_EXTENSIONS = [".txt", ".csv", ".tsv", ".json", ".jsonl"];
const PICK_NODES = new Set(["DrUMCoresetSampler", "DrUMConditioner"]);
const DEGREE_NODES = new Set(["DrUMDegreeSlider", "DrUMConditioner"]);
const PANEL_HEIGHT = { min: 90, max: 220 };
const DEGREE_HEIGHT = 58;

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

/** A read-only panel: a summary line and a scrollable list of (intensity, prompt) rows. */
class PromptPanel {
  constructor(emptyText) {
    this.root = element("div", "drum-panel");
    this.summary = element("div", "drum-summary", emptyText);
    this.list = element("ol", "drum-list");
    this.root.append(this.summary, this.list);
  }

  addTo(node, name) {
    this.root.dataset.drumPanel = name;
    addPageWidget(node, name, this.root, { getMinHeight: () => PANEL_HEIGHT.min, getMaxHeight: () => PANEL_HEIGHT.max });
    return this;
  }

  /** Shows `summary` over the rows [{prompt, weight}]; `hidden` counts rows not sent by the server. */
  show(summary, rows, hidden = 0) {
    this.summary.textContent = summary;
    const items = rows.map(({ prompt, weight }) => {
      const item = element("li", "drum-row");
      const intensity = element("span", "drum-weight", formatNumber(weight));
      intensity.title = t("picks.intensity");
      item.append(intensity, element("span", "drum-prompt", String(prompt)));
      return item;
    });
    if (hidden > 0) items.push(element("li", "drum-more", t("history.more", { count: hidden })));
    this.list.replaceChildren(...items);
  }

  status(text) {
    this.summary.textContent = text;
  }
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

function setUpHistoryLoader(node) {
  const panel = new PromptPanel(t("history.empty"));
  const picker = Object.assign(document.createElement("input"), { type: "file", accept: HISTORY_EXTENSIONS.join(","), multiple: false });
  picker.addEventListener("change", () => uploadHistory(node, panel, Array.from(picker.files ?? [])));
  const button = node.addWidget("button", "drum_upload", null, () => picker.click(), { serialize: false });
  button.label = t("history.choose");
  button.serialize = false;
  panel.addTo(node, "drum_history_preview");

  const carriesFiles = (event) => Array.from(event.dataTransfer?.items ?? []).some((item) => item.kind === "file");
  const historyFiles = (event) => Array.from(event.dataTransfer?.files ?? []).filter(isHistoryFile);
  // The app asks the node under the pointer first: accept any file while dragging, then only history files on drop.
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
  node.onExecuted = chain(node.onExecuted, (output) => {
    const loaded = output?.drum_history?.[0];
    if (!loaded) return;
    panel.show(t("history.summary", { count: loaded.count, source: loaded.source }), loaded.preview, loaded.count - loaded.preview.length);
  });
}

function setUpPicks(node) {
  const panel = new PromptPanel(t("picks.empty")).addTo(node, "drum_picks");
  node.onExecuted = chain(node.onExecuted, (output) => {
    if (output?.drum_picks) {
      panel.show(t("picks.summary", { count: output.drum_picks.length }), output.drum_picks);
    }
    const conditioning = output?.drum_conditioning?.[0];
    if (conditioning) {
      const degrees = conditioning.degrees.map((value) => formatNumber(value)).join(", ");
      const summary = t("picks.references", { family: conditioning.family, count: conditioning.references.length, degrees });
      panel.show(summary, conditioning.references);
    }
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

  // Draws mirror the widget: it may change from elsewhere (undo, workflow load, a script).
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
    refresh();
  };
  slider.addEventListener("input", () => set(slider.value));
  number.addEventListener("change", () => set(number.value));
  degree.hidden = true;
  addPageWidget(node, "drum_degree", root, { getMinHeight: () => DEGREE_HEIGHT, getMaxHeight: () => DEGREE_HEIGHT, onDraw: refresh });
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
      await loadLocale(currentLocale());
    } catch (error) {
      console.warn("DrUM: could not load the translations; showing English", error);
    }
  },
  nodeCreated(node) {
    const type = node.comfyClass;
    if (type === "DrUMHistoryLoader") setUpHistoryLoader(node);
    if (DEGREE_NODES.has(type)) setUpDegree(node);
    if (PICK_NODES.has(type)) setUpPicks(node);
    if (type?.startsWith("DrUM")) fitWidgets(node);
  },
  loadedGraphNode(node) {
    if (node.comfyClass?.startsWith("DrUM")) fitWidgets(node);
  },
});
