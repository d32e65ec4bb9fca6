// Every text the DrUM extension shows, keyed, with the English defaults.
// A file web/locales/<locale>.json (same keys) overrides any of them for ComfyUI's language setting.

const ENGLISH = {
  "history.summary": "{count} prompts · {source}",
  "history.empty": "Run the graph to preview the history. Drop a history file (.txt, .csv, .tsv, .json, .jsonl) on this node to upload it.",
  "history.more": "… {count} more not shown",
  "history.uploading": "Uploading {name} …",
  "history.uploaded": "Uploaded {name} to the input folder",
  "history.upload_failed": "Could not upload {name}: {reason}",
  "history.unsupported": "{name} is not a history file (use {extensions})",
  "history.choose": "Upload a history file…",
  "picks.summary": "{count} prompts picked",
  "picks.references": "{family} · {count} reference prompts · α {degrees}",
  "picks.empty": "Run the graph to see the prompts the coreset picks and their intensities.",
  "picks.intensity": "intensity",
  "degree.target": "target",
  "degree.history": "history",
  "degree.value": "α",
  "degree.sweep": "sweep: {count} degrees from {start} to {end}",
};

let active = { ...ENGLISH };

/** The text for `key` with `{name}` placeholders filled from `values`. */
export function t(key, values = {}) {
  const text = active[key] ?? ENGLISH[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in values ? String(values[name]) : whole));
}

/** Loads web/locales/<locale>.json (falling back to the base language, "zh-TW" → "zh"); English stays where none exists. */
export async function loadLocale(locale) {
  active = { ...ENGLISH };
  if (!locale || locale.split("-")[0] === "en") return;
  for (const candidate of [locale, locale.split("-")[0]]) {
    const response = await fetch(new URL(`../locales/${candidate}.json`, import.meta.url));
    if (!response.ok) continue;
    const table = await response.json();
    for (const [key, text] of Object.entries(table)) {
      if (key in ENGLISH && typeof text === "string") active[key] = text;
      else console.warn(`DrUM locale ${candidate}.json: unknown key or non-text value '${key}'`);
    }
    return;
  }
}
