// What the collection holds (GET /info), at the page's foot, and, on a server that watches its
// folders (`serve --watch`), what the watcher is doing: read again every few seconds while it
// watches, so new files show up in searches and the page says when they have.
import {$, el, when} from "./util.js";

const EVERY_MS = 5000;
let timer = null;

const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

function counts(info) {
  const c = info.counts || {};
  const parts = [];
  for (const [kind, n] of Object.entries(c)) {
    if (kind === "shot") continue;
    parts.push(kind === "video" && c.shot ? `${plural(n, "video")} (${plural(c.shot, "shot")})`
      : plural(n, kind));
  }
  const model = info.model && info.model.name ? ` \u00b7 model ${info.model.name}` : "";
  return `${parts.join(", ") || "nothing indexed yet"}${model}`;
}

// The watcher's state in words: what it does, what waits, what went wrong.
export function watchText(w) {
  const folders = plural((w.folders || []).length, "folder");
  const said = {
    starting: `Watch: first pass over ${folders}`,
    indexing: `Watch: indexing ${plural(w.pending || 0, "change")}`,
    watching: `Watching ${folders} for changes` +
      (w.pending ? `, ${plural(w.pending, "change")} waiting` : ""),
    retrying: `Watch: indexing failed (${w.error || "unknown error"}), trying again` +
      (w.retry_in ? ` in ${Math.round(w.retry_in)} s` : ""),
    stopped: "Watch stopped" + (w.error ? `: ${w.error}` : ""),
  }[w.state] || `Watch: ${w.state}`;
  const more = [];
  if (w.mode === "polling") more.push(`polling${w.polling_reason ? ` (${w.polling_reason})` : ""}`);
  if (w.last_indexed) more.push(`last indexed ${when(w.last_indexed)}`);
  if (w.batches) {
    more.push(`${w.added || 0} added, ${w.updated || 0} updated, ${w.removed || 0} removed` +
              (w.failed ? `, ${w.failed} failed` : ""));
  }
  if ((w.missing || []).length) more.push(`missing: ${w.missing.join(", ")}`);
  return more.length ? `${said}; ${more.join("; ")}` : said;
}

export async function showInfo() {
  clearTimeout(timer);
  let info;
  try {
    const res = await fetch("/info", {credentials: "same-origin"});
    if (!res.ok) return;  // signed out: the sign-in form says so
    info = await res.json();
  } catch (e) {
    return;
  }
  $("#collection").textContent = counts(info);
  const watch = $("#watch");
  watch.hidden = !info.watch;
  if (info.watch) {
    watch.textContent = "";
    watch.append(el("span", {class: `state ${info.watch.state}`, text: watchText(info.watch)}));
    timer = setTimeout(showInfo, EVERY_MS);
  }
}
