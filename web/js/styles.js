// DrUM's styles. They travel inside the pack's own DOM widgets: every widget element the pack makes starts with a
// <style> element holding one of these sheets (addStyle), instead of a stylesheet added to the shared document's
// <head> (comfy-test's isolation rules, docs/shipping.md). CSS in a <style> applies page-wide wherever the element
// sits, so every selector names one of the pack's own "drum-" classes or attributes (comfy-test checks each one), and
// each widget carries its own copy: it is styled while it is on the page, whatever else was removed. Colours come
// from the ComfyUI theme variables. Static text only: nothing here is built from data.

/** The page widgets of web/js/drum.js: prompt panels, the profile map, the degree slider. */
export const PAGE_STYLE = `<style>
.drum-panel {
  box-sizing: border-box;
  display: flex;
  flex-direction: column;
  height: 100%;
  padding: 4px 6px;
  overflow: hidden;
  border-radius: 6px;
  background: var(--comfy-input-bg);
  color: var(--input-text);
  font: 12px/1.35 sans-serif;
}

.drum-summary {
  flex: none;
  margin-bottom: 4px;
  font-weight: 600;
}

.drum-list {
  flex: 1;
  margin: 0;
  padding: 0;
  overflow-y: auto;
  list-style: none;
}

.drum-row {
  display: flex;
  gap: 6px;
  padding: 2px 0;
  border-bottom: 1px solid var(--border-color);
}

.drum-weight {
  flex: none;
  width: 3em;
  color: var(--descrip-text);
  font-variant-numeric: tabular-nums;
  text-align: right;
}

.drum-prompt {
  flex: 1;
  white-space: pre-wrap;
  overflow-wrap: anywhere;
}

.drum-more {
  padding: 2px 0;
  color: var(--descrip-text);
  font-style: italic;
}

.drum-degree {
  box-sizing: border-box;
  height: 100%;
  padding: 2px 8px;
  color: var(--input-text);
  font: 12px sans-serif;
}

.drum-degree-row {
  display: flex;
  align-items: center;
  gap: 6px;
}

.drum-degree-slider {
  flex: 1;
  min-width: 40px;
}

.drum-degree-end {
  color: var(--descrip-text);
}

.drum-degree-value {
  display: flex;
  align-items: center;
  justify-content: center;
  gap: 6px;
}

.drum-degree-number {
  width: 4.5em;
  border: 1px solid var(--border-color);
  border-radius: 4px;
  background: var(--comfy-input-bg);
  color: var(--input-text);
  text-align: center;
}

.drum-degree-sweep {
  color: var(--descrip-text);
}

.drum-inactive .drum-degree-row,
.drum-inactive .drum-degree-number {
  opacity: 0.4;
  pointer-events: none;
}

.drum-heading {
  padding: 4px 0 2px;
  color: var(--descrip-text);
  font-weight: 600;
}

.drum-failed .drum-summary {
  color: var(--error-text, #ff4444);
  font-weight: 400;
  white-space: pre-wrap;
  overflow-wrap: anywhere;
}

/* The Vue "Nodes 2.0" renderer sizes a DOM widget by its content: a fixed height keeps the node from growing
   over its neighbours after a run (the list scrolls inside). The classic renderer sizes it from the node. */
.lg-node-widget .drum-panel {
  flex: 0 0 auto;
  height: var(--drum-panel-height, 160px);
}

/* Not a run's output: where the run stopped, an upload's notice. */
.drum-notice .drum-summary {
  color: var(--descrip-text);
  font-weight: 400;
  white-space: pre-wrap;
}

/* An output from the previous run: an input upstream changed since (the reason on top). */
.drum-stale {
  display: none;
  flex: none;
  margin-bottom: 2px;
  color: var(--descrip-text);
  font-style: italic;
}

.drum-stale-output .drum-stale {
  display: block;
}

.drum-stale-output .drum-summary,
.drum-stale-output .drum-list {
  opacity: 0.45;
}

/* The profile map (DrUM Profile Preview): dots by prompt, picks orange and numbered. */
.drum-map-item {
  display: flex;
  flex-direction: column;
  height: 100%;
}

.drum-map {
  flex: 1;
  width: 100%;
  min-height: 0;
}

.drum-map-frame {
  fill: none;
  stroke: var(--border-color);
  stroke-width: 0.3;
}

.drum-map-dot {
  fill: var(--descrip-text);
  fill-opacity: 0.7;
}

.drum-map-dot.drum-map-pick {
  fill: #e66e14;
  fill-opacity: 1;
}

.drum-map-dot:hover {
  stroke: var(--input-text);
  stroke-width: 0.6;
}

.drum-map-rank {
  fill: var(--input-text);
  font-size: 5px;
  font-weight: 600;
  pointer-events: none;
}

.drum-map-readout {
  flex: none;
  min-height: 2.7em;
  color: var(--descrip-text);
  overflow-wrap: anywhere;
}

.lg-node-widget .drum-panel[data-drum-panel="drum_map"] {
  height: 280px;
}
</style>`;

/** The like / dislike buttons of web/js/ratings.js. */
export const RATINGS_STYLE = `<style>
.drum-rate-row {
  box-sizing: border-box;
  display: flex;
  flex-wrap: wrap;
  align-items: center;
  gap: 4px 10px;
  height: 100%;
  padding: 2px 6px;
  overflow: hidden;
  color: var(--input-text);
  font: 12px/1.35 sans-serif;
}

.drum-rate-empty {
  color: var(--descrip-text);
}

.drum-rate-pair {
  display: inline-flex;
  align-items: center;
  gap: 3px;
}

.drum-rate-label {
  color: var(--descrip-text);
  margin-right: 2px;
}

.drum-rate-button {
  padding: 1px 6px;
  border: 1px solid var(--border-color);
  border-radius: 6px;
  background: var(--comfy-input-bg);
  color: var(--input-text);
  cursor: pointer;
  opacity: 0.7;
}

.drum-rate-button:hover {
  opacity: 1;
}

.drum-rate-button.drum-rate-on {
  opacity: 1;
  border-color: var(--p-primary-color, #4a9eff);
  background: var(--comfy-menu-secondary-bg, var(--comfy-input-bg));
}

.drum-rate-button:disabled {
  cursor: default;
  opacity: 0.3;
}

/* A popover (the top layer): placed by web/js/ratings.js at the image's bottom left corner. */
.drum-rate-hover {
  position: fixed;
  inset: auto;
  margin: 0;
  padding: 2px;
  border: none;
  border-radius: 8px;
  background: rgb(0 0 0 / 55%);
}

.drum-rate-button svg {
  display: block;
  width: 15px;
  height: 15px;
  fill: none;
  stroke: currentColor;
  stroke-width: 2;
  stroke-linecap: round;
  stroke-linejoin: round;
}

.drum-rate-dislike svg {
  transform: rotate(180deg);
}

.drum-rate-button.drum-rate-on svg {
  fill: currentColor;
  fill-opacity: 0.35;
}

.drum-rate-like.drum-rate-on {
  color: #4caf50;
}

.drum-rate-dislike.drum-rate-on {
  color: #e57373;
}
</style>`;

/** Puts `style` (PAGE_STYLE or RATINGS_STYLE) first in `root`, a widget element the pack made; returns the <style>. */
export function addStyle(root, style) {
  root.insertAdjacentHTML("afterbegin", style);
  return root.firstElementChild;
}
