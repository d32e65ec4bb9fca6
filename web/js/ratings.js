// DrUM likes and dislikes: one click on an output image records 👍 or 👎 for it (POST /drum/ratings), and the
// outputs history carries the rating, so DrUM History Split gives likes and dislikes from what the user clicked.
//   - Save Image / Preview Image nodes (and the animated savers) get a row of 👍 / 👎 buttons under their
//     widgets, one pair per image of their last run: a DOM widget, so it works in the classic canvas renderer
//     and in the Vue "Nodes 2.0" one alike.
//   - The node's own image, where the page draws it as an <img> from /view (the Vue renderer's node preview), shows
//     the same pair while the pointer is over it.
// Everything the pack adds stays inside the node's own DOM widget (the pair over the image is a popover there) and
// every listener is on an element of that node: nothing in the shared document (comfy-test, docs/shipping.md).
// After a reload the nodes get their last run's images back from /history (the page keeps no outputs).
// The buttons show the stored state (read from GET /drum/ratings when the page opens, when the pointer comes onto a
// row, and after every click); clicking the pressed button again clears the rating. File names are user data: set
// as textContent only.

import { api } from "../../../scripts/api.js";
import { app } from "../../../scripts/app.js";
import { t } from "./strings.js";
import { addStyle, RATINGS_STYLE } from "./styles.js";

const ROUTE = "/drum/ratings";
const RATED_NODES = new Set(["SaveImage", "PreviewImage", "SaveAnimatedWEBP", "SaveAnimatedPNG"]);
const WIDGET = "drum_ratings";
const KINDS = new Set(["output", "temp"]);
const BUTTONS = [
  ["like", () => t("ratings.like")],
  ["dislike", () => t("ratings.dislike")],
];
// A thumb (Lucide's "thumbs-up" outline); the dislike button shows it upside down. Drawn, so no emoji font is needed.
const THUMB = ["M7 10v12", "M15 5.88 14 10h5.83a2 2 0 0 1 1.92 2.56l-2.33 8A2 2 0 0 1 17.5 22H4a2 2 0 0 1-2-2v-8a2 2 0 0 1 2-2h2.76a2 2 0 0 0 1.79-1.11L12 2a3.13 3.13 0 0 1 3 3.88Z"];
const HISTORY_ITEMS = 32; // how far back /history is searched for this workflow's last run after a reload
const SAVED = { like: () => t("ratings.saved_like"), dislike: () => t("ratings.saved_dislike") };
const RELOAD_AFTER_MS = 2000; // the pointer coming onto a row reads the ratings again, at most this often

function element(tag, className, text) {
  const node = document.createElement(tag);
  node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** {filename, subfolder, type} of an output/temp image reference, or null. */
function imageOf(reference) {
  const type = reference?.type ?? "output";
  if (!reference?.filename || !KINDS.has(type)) return null;
  return { filename: String(reference.filename), subfolder: String(reference.subfolder ?? ""), type };
}

/** The image an <img> shows when its address is ComfyUI's /view of an output or temp file, or null. */
function imageOfAddress(src) {
  let url;
  try {
    url = new URL(src, window.location.href);
  } catch {
    return null;
  }
  if (url.origin !== window.location.origin || !/\/view$/.test(url.pathname)) return null;
  const query = url.searchParams;
  return imageOf({ filename: query.get("filename"), subfolder: query.get("subfolder") ?? "", type: query.get("type") ?? "output" });
}

/** One key per image, as the server names it: "<type>:<subfolder>/<filename>". */
function keyOf(image) {
  const subfolder = image.subfolder.split(/[\\/]+/).filter(Boolean).join("/");
  return `${image.type}:${subfolder ? `${subfolder}/` : ""}${image.filename}`;
}

/** The ratings the page knows (a copy of the server's), and the views to redraw when one changes. */
class RatingBook {
  constructor() {
    this.ratings = new Map();
    this.views = new Set();
    this.loaded = null; // when refresh() last read the stored ratings (ms)
    this.version = 0; // bumped by every click: a read that was under way then must not put back the older state
  }

  get(image) {
    return this.ratings.get(keyOf(image)) ?? null;
  }

  set(image, rating) {
    if (rating === "like" || rating === "dislike") this.ratings.set(keyOf(image), rating);
    else this.ratings.delete(keyOf(image));
  }

  changed() {
    for (const view of this.views) view();
  }

  /** Reads the stored ratings again unless that was done in the last RELOAD_AFTER_MS (another tab may have rated). */
  refresh() {
    const now = Date.now();
    if (now - (this.loaded ?? -Infinity) < RELOAD_AFTER_MS) return;
    this.loaded = now;
    this.load().catch((error) => console.warn("DrUM: could not read the ratings", error));
  }

  async load() {
    const version = this.version;
    const response = await api.fetchApi(ROUTE);
    if (!response.ok) throw new Error(`GET ${ROUTE} answered ${response.status}`);
    const { ratings } = await response.json();
    if (version !== this.version) return;
    this.ratings.clear();
    for (const entry of ratings ?? []) {
      const image = imageOf(entry);
      if (image) this.set(image, entry.rating);
    }
    this.changed();
  }

  /** Stores `word` ("like", "dislike", "clear") for the image; the server's answer sets the state shown. */
  async rate(image, word) {
    this.version += 1;
    const response = await api.fetchApi(ROUTE, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ image, rating: word }),
    });
    const answer = await response.json().catch(() => ({}));
    this.version += 1; // and a read started while the server was storing it
    if (!response.ok) throw new Error(answer.error ?? `${response.status} ${response.statusText}`);
    this.set(image, answer.rating);
    this.changed();
    return answer.rating;
  }
}

const book = new RatingBook();

function toast(severity, detail) {
  app.extensionManager?.toast?.add({ severity, summary: "DrUM", detail, life: severity === "error" ? 8000 : 2500 });
}

function thumbIcon() {
  const namespace = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(namespace, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  for (const d of THUMB) {
    const path = document.createElementNS(namespace, "path");
    path.setAttribute("d", d);
    svg.append(path);
  }
  return svg;
}

/** A 👍 / 👎 pair for `image` (a function, so a hover bar can change its image); clicking the pressed one clears. */
function ratingButtons(getImage) {
  const pair = element("span", "drum-rate-pair");
  const buttons = BUTTONS.map(([word, title]) => {
    const button = element("button", `drum-rate-button drum-rate-${word}`);
    button.append(thumbIcon());
    button.type = "button";
    button.dataset.rating = word;
    button.title = title();
    button.setAttribute("aria-label", title());
    for (const type of ["pointerdown", "mousedown"]) button.addEventListener(type, (event) => event.stopPropagation());
    button.addEventListener("click", async (event) => {
      event.stopPropagation();
      event.preventDefault();
      const image = getImage();
      if (!image) return;
      const current = book.get(image);
      try {
        const rating = await book.rate(image, current === word ? "clear" : word);
        const text = SAVED[rating]?.() ?? t("ratings.cleared");
        toast("success", text.replace("{image}", image.filename));
      } catch (error) {
        toast("error", t("ratings.failed", { message: error.message }));
      }
    });
    pair.append(button);
    return button;
  });
  const update = () => {
    const image = getImage();
    const rating = image ? book.get(image) : null;
    pair.dataset.rating = rating ?? "";
    for (const button of buttons) {
      const on = button.dataset.rating === rating;
      button.classList.toggle("drum-rate-on", on);
      button.setAttribute("aria-pressed", String(on));
      button.disabled = !image;
    }
  };
  update();
  return { pair, update };
}

/** The row of buttons on an image node: one pair per image of its last run, and the pair over the node's own image. */
function addRatingRow(node) {
  const root = element("div", "drum-rate-row");
  const style = addStyle(root, RATINGS_STYLE);
  const hover = new ImageHover();
  let images = [];
  let pairs = [];
  const show = (references) => {
    images = (references ?? []).map(imageOf).filter(Boolean);
    pairs = images.map((image, index) => {
      const { pair, update } = ratingButtons(() => image);
      if (images.length > 1) pair.prepend(element("span", "drum-rate-label", String(index + 1)));
      pair.title = image.filename;
      return { pair, update };
    });
    const shown = pairs.length ? pairs.map(({ pair }) => pair) : [element("span", "drum-rate-empty", t("ratings.empty"))];
    root.replaceChildren(style, hover.bar, ...shown);
    node.drumRatedImages = images;
  };
  const widget = node.addDOMWidget(WIDGET, WIDGET, root, { serialize: false, hideOnZoom: false, getMinHeight: () => 34, getMaxHeight: () => 64 });
  widget.serialize = false;
  root.addEventListener("pointerenter", () => book.refresh());
  const view = () => {
    for (const { update } of pairs) update();
    hover.update();
  };
  book.views.add(view);
  // The row sits in the node's element when the Vue renderer draws the node (the image's <img> is there too); the
  // renderer may draw it anew: follow the row each time it comes onto or leaves the screen.
  const placed = new IntersectionObserver(() => hover.follow(root.closest("[data-node-id]")));
  placed.observe(root);
  const removed = node.onRemoved;
  node.onRemoved = function (...args) {
    book.views.delete(view);
    placed.disconnect();
    hover.follow(null);
    return removed?.apply(this, args);
  };
  const executed = node.onExecuted;
  node.onExecuted = function (output) {
    const result = executed?.apply(this, arguments);
    if (output?.images) show(output.images);
    return result;
  };
  node.drumShowRatings = show;
  show(app.nodeOutputs?.[node.id]?.images);
}

function isOutputImage(img) {
  return img instanceof HTMLImageElement && imageOfAddress(img.currentSrc || img.src) !== null;
}

/** The output image the pointer is on: `target` itself, or an image inside it under (x, y) (galleries draw their
 * <img> with pointer-events: none under a frame that gets the events). */
function outputImageAt(target, x, y) {
  if (isOutputImage(target)) return target;
  if (!(target instanceof Element)) return null;
  for (const img of target.querySelectorAll("img")) {
    const box = img.getBoundingClientRect();
    if (x >= box.left && x <= box.right && y >= box.top && y <= box.bottom && isOutputImage(img)) return img;
  }
  return null;
}

/** The pair shown over an image node's own output image while the pointer is on it: a popover (drawn above the
 * canvas, outside the node's zoom transform) kept in the node's rating row, with listeners on the node's element. */
class ImageHover {
  constructor() {
    this.current = null; // the <img> the bar is over
    this.host = null; // the node's element the listeners are on
    const { pair, update } = ratingButtons(() => this.current && imageOfAddress(this.current.currentSrc || this.current.src));
    this.update = update;
    this.bar = element("div", "drum-rate-hover");
    this.bar.popover = "manual";
    this.bar.append(pair);
    const hide = () => this.hide();
    this.listeners = {
      pointerover: (event) => this.pointAt(event),
      pointermove: (event) => this.pointAt(event),
      pointerleave: hide,
      wheel: hide, // the canvas zooms or pans under a still pointer
    };
  }

  /** Listens on `host` (the node's element, or null: none) instead of the element listened on until now. */
  follow(host) {
    if (host === this.host) return;
    for (const [type, listener] of Object.entries(this.listeners)) this.host?.removeEventListener(type, listener);
    this.hide();
    this.host = host;
    for (const [type, listener] of Object.entries(this.listeners)) this.host?.addEventListener(type, listener, { passive: true });
  }

  pointAt(event) {
    if (this.bar.contains(event.target)) return;
    const img = outputImageAt(event.target, event.clientX, event.clientY);
    const box = img?.getBoundingClientRect();
    if (!img || !this.bar.isConnected || box.width < 48 || box.height < 32) return this.hide();
    this.current = img;
    this.update();
    if (!this.bar.matches(":popover-open")) this.bar.showPopover();
    this.bar.style.left = `${Math.round(box.left + 4)}px`;
    this.bar.style.top = `${Math.round(box.bottom - this.bar.offsetHeight - 4)}px`;
  }

  hide() {
    this.current = null;
    if (this.bar.matches(":popover-open")) this.bar.hidePopover();
  }
}

/**
 * Node outputs live in the page only, so after a reload the image nodes get their images back from the newest
 * /history entry of this workflow (by its id), for nodes of the same type that show nothing yet.
 */
async function refillFromHistory() {
  const graph = app.rootGraph ?? app.graph;
  const nodes = (graph?.nodes ?? []).filter((node) => node.drumShowRatings && !node.drumRatedImages?.length);
  if (!graph?.id || nodes.length === 0) return;
  const response = await api.fetchApi(`/history?max_items=${HISTORY_ITEMS}`);
  if (!response.ok) return;
  const entries = Object.values(await response.json()).reverse();
  const last = entries.find((entry) => entry.prompt?.[3]?.extra_pnginfo?.workflow?.id === graph.id);
  if (!last) return;
  for (const node of nodes) {
    const images = last.outputs?.[node.id]?.images;
    if (images && last.prompt[2]?.[node.id]?.class_type === node.comfyClass && !node.drumRatedImages?.length) node.drumShowRatings(images);
  }
}

app.registerExtension({
  name: "DrUM.Ratings",
  setup() {
    book.refresh();
  },
  nodeCreated(node) {
    if (RATED_NODES.has(node.comfyClass)) addRatingRow(node);
  },
  async afterConfigureGraph() {
    try {
      await refillFromHistory();
    } catch (error) {
      console.warn("DrUM: could not read /history for the rated images", error);
    }
  },
  onNodeOutputsUpdated(nodeOutputs) {
    const graph = app.rootGraph ?? app.graph;
    for (const [id, output] of Object.entries(nodeOutputs ?? {})) graph?.getNodeById(id)?.drumShowRatings?.(output?.images);
  },
});
