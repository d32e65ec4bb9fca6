// The extension's texts: the "drum" section of the pack's locales/<language>/main.json, which ComfyUI
// serves with every custom node's translations at /i18n. Keys a language lacks stay English
// (locales/en/main.json), and a key English lacks shows as the key itself.

import { api } from "../../../scripts/api.js";

let active = {};

/** {"a": {"b": "text"}} → {"a.b": "text"} */
function flatten(table, prefix = "", into = {}) {
  for (const [key, value] of Object.entries(table ?? {})) {
    if (typeof value === "string") into[prefix + key] = value;
    else if (value && typeof value === "object") flatten(value, `${prefix}${key}.`, into);
  }
  return into;
}

/** The text for `key` with `{name}` placeholders filled from `values`. */
export function t(key, values = {}) {
  const text = active[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in values ? String(values[name]) : whole));
}

/** Loads the texts for `locale` ("fr", "zh-TW" falling back to "zh"), over English. */
export async function loadStrings(locale) {
  const response = await api.fetchApi("/i18n");
  if (!response.ok) throw new Error(`GET /i18n answered ${response.status}`);
  const translations = await response.json();
  const chosen = translations[locale] ?? translations[locale?.split("-")[0]];
  active = { ...flatten(translations.en?.drum), ...flatten(chosen?.drum) };
}
