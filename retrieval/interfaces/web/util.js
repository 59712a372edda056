// Helpers the page's modules share: requests, text with marked words, and how numbers,
// times and sizes read. Data goes into the page as text nodes, never as HTML.
export const $ = (s, root = document) => root.querySelector(s);

// Set when the server answers 401: the page shows its sign-in form.
let onSignInNeeded = () => {};
export function whenSignInNeeded(fn) { onSignInNeeded = fn; }

// fetch with the page's session cookie; a failed answer becomes an Error with the server's
// one-line detail.
export async function call(url, options) {
  const res = await fetch(url, Object.assign({credentials: "same-origin"}, options));
  if (res.status === 401) {
    onSignInNeeded();
    throw new Error("This server needs an access token: enter it above.");
  }
  if (!res.ok) {
    let msg = res.statusText;
    try { msg = (await res.json()).detail || msg; } catch (e) {}
    const err = new Error(msg);
    err.status = res.status;
    throw err;
  }
  return res;
}

export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("aria-") || k.startsWith("data-") || k === "role") {
      node.setAttribute(k, v);
    } else node[k] = v;
  }
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== ""));
  return node;
}

// Fill `node` with `text`, the words that matched (`words`, as the text writes them) in
// <mark> elements: marked in the text itself, not only by colour. Latin words are marked where
// they stand whole; Chinese, Japanese and Korean words wherever they occur (they sit inside
// runs without spaces).
const CJK = /[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]/u;
const escapeRe = (w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

export function marked(node, text, words) {
  node.textContent = "";
  const parts = [...new Set((words || []).filter((w) => w && w.trim()))]
    .sort((a, b) => b.length - a.length)
    .map((w) => CJK.test(w) ? escapeRe(w) : `(?<![\\p{L}\\p{N}])${escapeRe(w)}(?![\\p{L}\\p{N}])`);
  if (!parts.length) { node.textContent = text; return node; }
  const re = new RegExp(parts.join("|"), "giu");
  let at = 0;
  for (const m of text.matchAll(re)) {
    if (m.index > at) node.appendChild(document.createTextNode(text.slice(at, m.index)));
    node.appendChild(el("mark", {text: m[0]}));
    at = m.index + m[0].length;
  }
  if (at < text.length) node.appendChild(document.createTextNode(text.slice(at)));
  return node;
}

// The words of a typed query worth marking in every text of a result: short Latin words
// ("a", "at") would mark half of every caption; Chinese, Japanese and Korean ones are kept.
export function queryWords(q) {
  return (q || "").match(/[\p{L}\p{N}]+/gu)?.filter((w) => CJK.test(w) || w.length >= 3) || [];
}

// A long recognised text, cut to about `room` characters around the first matched word.
export function excerpt(text, words, room = 160) {
  const flat = text.split(/\s+/).join(" ").trim();
  if (flat.length <= room) return flat;
  const folded = flat.toLowerCase();
  const found = (words || []).map((w) => folded.indexOf(w.toLowerCase())).filter((i) => i >= 0);
  const first = found.length ? Math.min(...found) : 0;
  const start = first < room / 2 ? 0 : first - 30;
  const end = start + room;
  return (start ? "..." : "") + flat.slice(start, end).trim() + (end < flat.length ? "..." : "");
}

// A time in seconds as a player shows it: 01:23, or 1:02:03 from an hour on.
export function clock(seconds) {
  const s = Math.floor((seconds || 0) + 0.001);
  const two = (n) => String(n).padStart(2, "0");
  const hours = Math.floor(s / 3600);
  return (hours ? `${hours}:` : "") + `${two(Math.floor((s % 3600) / 60))}:${two(s % 60)}`;
}

export const fileName = (h) => h.path ? h.path.split("/").pop() : "";
export const timeSpan = (h) => `${clock(h.start)}\u2013${clock(h.end)}`;

export function bytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["bytes", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
  return i ? `${n.toFixed(n < 10 ? 1 : 0)} ${units[i]}` : `${n} bytes`;
}

// An ISO time as the reader's locale writes it (a date without a zone is shown as written).
export function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString(undefined, {dateStyle: "medium", timeStyle: "short"});
}

// The image shown for a hit: its own, a caption's image's, a shot's keyframe.
export const imageOf = (h) => h.kind === "text" ? (h.metadata || {}).caption_of : h.id;
export const thumbUrl = (id, size) => `/items/${id}/thumbnail?size=${size}`;
export const srcset = (id, sizes) => sizes.map((s) => `${thumbUrl(id, s)} ${s}w`).join(", ");
