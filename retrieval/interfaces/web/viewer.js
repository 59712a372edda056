// The viewer: one result large, with everything the engine knows of it, in a modal <dialog>
// (its role is dialog; the page behind it is inert, and Tab cycles through the viewer's own
// controls). Left and right arrows move to the previous and next result, across pages;
// Esc closes it and gives the focus back to the result's card. Images are shown as large
// thumbnails (EXIF-rotated, 512 or 1024 by the room they get); videos play from the shot's time.
import {
  $, bytes, call, clock, el, fileName, imageOf, marked, srcset, thumbUrl, timeSpan, when,
} from "./util.js";

const viewer = $("#viewer");
const stage = $(".stage", viewer);
const picture = $("img", stage);
const screen = $("video", stage);
const textStage = $(".text", stage);
const note = $(".note", viewer);

let source = null;  // {hits, offset, total, hasNext, words}: the results the viewer moves through
let index = 0;
let hooks = {like: () => {}, turn: async () => null, error: () => {}};

// like(hit): search for more like it; turn(+1 | -1): the next or previous page's source, or
// null; error(message): say what went wrong on the page.
export function setViewerHooks(h) { hooks = h; }

export function openViewer(src, i) {
  source = src;
  index = i;
  if (!viewer.open) viewer.showModal();
  show();
  $(".close", viewer).focus();
}

// Closed by Esc, its Close button, a new search: the focus goes back to the card of the result
// last shown, where it is on the page (at once: the dialog's close event comes a task later).
export function closeViewer() {
  if (!viewer.open) return;
  viewer.close();
  stopVideo();
  const card = source && document.querySelector(`#grid .hit[data-id="${current().id}"] .open`);
  if (card) card.focus();
}

const current = () => source.hits[index];
const absolute = () => source.offset + index;  // the result's place among all results

function last() {
  if (source.total !== null && source.total !== undefined) return source.total;
  return source.hasNext ? null : source.offset + source.hits.length;
}

async function go(delta) {
  const to = index + delta;
  if (to >= 0 && to < source.hits.length) {
    index = to;
    show();
    return;
  }
  if ((delta < 0 && source.offset === 0) || (delta > 0 && !source.hasNext)) return;
  const turned = await hooks.turn(delta);
  if (turned && turned.hits.length) {
    source = turned;
    index = delta > 0 ? 0 : turned.hits.length - 1;
    show();
  }
}

function show() {
  const h = current();
  const total = last();
  $(".position", viewer).textContent = total === null ? `result ${absolute() + 1}`
    : `${absolute() + 1} of ${total}`;
  $(".prev", viewer).disabled = absolute() === 0;
  $(".next", viewer).disabled = total !== null && absolute() + 1 >= total;
  $("#viewer-title").textContent = fileName(h) || "A text";
  note.textContent = "";
  showStage(h);
  showDetails(h);
}

function showStage(h) {
  stopVideo();
  const img = imageOf(h);
  picture.hidden = h.kind === "video" || img === undefined;
  screen.hidden = h.kind !== "video";
  textStage.hidden = h.kind !== "text" || img !== undefined;
  if (h.kind === "video") {
    playVideo(h);
  } else if (img !== undefined) {
    showPicture(h, img);
  } else {
    marked(textStage, h.text || "", words(h));
  }
}

// An image: a large thumbnail (EXIF-rotated, 512 or 1024 by the room it gets), or an image no
// larger than that as it is (the browser turns it as its EXIF says), its thumbnail where the
// browser cannot show its format.
function showPicture(h, img) {
  const m = h.metadata || {};
  const thumbnail = () => {
    picture.onerror = () => noPreview(`/items/${img}/thumbnail`);
    picture.sizes = `${Math.ceil(stage.clientWidth || 1024)}px`;
    picture.srcset = srcset(img, [512, 1024]);
    picture.src = thumbUrl(img, 1024);
  };
  picture.alt = h.kind === "image" && h.text ? h.text : fileName(h);
  picture.removeAttribute("srcset");
  picture.removeAttribute("width");
  picture.removeAttribute("height");
  picture.dataset.item = img;
  if (m.width && m.height) { picture.width = m.width; picture.height = m.height; }
  if (h.kind === "image" && m.width && Math.max(m.width, m.height) <= 1024) {
    picture.onerror = thumbnail;
    picture.src = `/items/${img}/image`;
  } else {
    thumbnail();
  }
}

async function noPreview(url) {
  try {
    await call(url);
    note.textContent = "No preview of this item";
  } catch (e) {
    note.textContent = `No preview of this item: ${e.message}`;
  }
}

// A video from the shot's start: a media fragment (#t=start), and a seek where a browser
// ignores it; its file comes in byte ranges as the browser asks for them.
function playVideo(h) {
  const url = `/items/${h.id}/video`;
  screen.onloadedmetadata = () => {
    if (Math.abs(screen.currentTime - h.start) > 0.25) screen.currentTime = h.start;
  };
  screen.onerror = () => explain(url, fileName(h));
  screen.src = `${url}#t=${h.start}`;
  screen.play().catch(() => {});  // autoplay refused: its controls play it
}

// A media element does not say why it cannot play: the server's answer for the first byte does
// (gone, changed since indexed, outside the folders), else it is the browser's format.
async function explain(url, name) {
  try {
    await call(url, {headers: {Range: "bytes=0-0"}});
    note.textContent = `cannot play ${name}: this browser does not play its format`;
  } catch (e) {
    note.textContent = `cannot play ${name}: ${e.message}`;
  }
  hooks.error(note.textContent);
}

function stopVideo() {
  screen.onerror = null;
  screen.pause();
  if (screen.hasAttribute("src")) {
    screen.removeAttribute("src");
    screen.load();  // lets go of the file
  }
}

const words = (h) => [...source.words, ...(((h.metadata || {}).match || {}).words || [])];

function showDetails(h) {
  const m = h.metadata || {};
  $(".path", viewer).textContent = h.path || "";
  $(".path", viewer).hidden = !h.path;
  const facts = $(".facts", viewer);
  facts.textContent = "";
  const row = (label, value) => {
    if (value !== null && value !== undefined && value !== "") {
      facts.append(el("dt", {text: label}), el("dd", {text: String(value)}));
    }
  };
  if (h.score !== null) row("Score", `${h.score.toFixed(3)}${m.score_kind ? ` (${m.score_kind})` : ""}`);
  if (h.kind === "video") {
    row("Moment", `${timeSpan(h)}${m.duration ? ` of ${clock(m.duration)}` : ""}`);
    row("Video", [m.codec, m.container, m.fps ? `${Math.round(m.fps * 100) / 100} fps` : "",
                  m.has_audio ? "with sound" : ""].filter(Boolean).join(", "));
  }
  if (h.kind === "text") row("Source", m.source === "ocr" ? "text recognised in an image" : m.source);
  if (m.width && m.height) row("Dimensions", `${m.width} \u00d7 ${m.height}`);
  row("File size", bytes(m.size));
  row("Taken", when(m.taken_at));
  if (!m.taken_at) row("Modified", when(m.mtime));
  row("Camera", [m.camera_make, m.camera_model].filter(Boolean).join(" "));
  row("Id", h.id);
  showTags(m.tags);
  showMoments(h);
  showTexts(h);
  showActions(h);
}

function showTags(tags) {
  const list = $(".tags", viewer);
  list.textContent = "";
  const entries = Object.entries(tags || {}).sort((a, b) => b[1] - a[1]);
  for (const [tag, score] of entries) {
    list.append(el("li", {text: tag, title: `tag score ${Number(score).toFixed(3)}`}));
  }
  list.hidden = !entries.length;
  $(".tags-heading", viewer).hidden = !entries.length;
}

// The moments of this video among the results (every shot of a video search): one button
// each, the one shown pressed; a press plays the video from there.
function showMoments(h) {
  const list = $(".moments", viewer);
  list.textContent = "";
  const same = source.hits.map((x, i) => [x, i])
    .filter(([x]) => h.kind === "video" && x.kind === "video" && x.video === h.video);
  for (const [x, i] of same) {
    const moment = el("button", {type: "button", text: timeSpan(x),
                                 "aria-pressed": String(i === index)});
    moment.addEventListener("click", () => { index = i; show(); });
    list.append(el("li", {}, moment));
  }
  list.hidden = $(".moments-heading", viewer).hidden = same.length < 2;
}

// Every text of the item, each under its name, the query's words marked.
function showTexts(h) {
  const m = h.metadata || {};
  const box = $(".texts", viewer);
  box.textContent = "";
  const text = (label, value, cls) => {
    if (!value) return;
    box.append(el("h3", {text: label}), marked(el("p", {class: cls || ""}), value, words(h)));
  };
  if (h.kind === "text") {
    text(m.source === "ocr" ? "Text recognised in the image" : "Text", h.text, "ocr-text");
  } else {
    text("Caption", h.text);
    text("Generated caption", m.generated_caption);
    text("Text recognised in the image", m.ocr_text, "ocr-text");
  }
  box.hidden = !box.childElementCount;
}

function showActions(h) {
  const file = h.kind === "video" ? `/items/${h.id}/video`
    : imageOf(h) !== undefined ? `/items/${imageOf(h)}/image` : null;
  const open = $(".original", viewer);
  const download = $(".download", viewer);
  open.hidden = download.hidden = file === null;
  if (file !== null) {
    open.href = download.href = file;
    download.download = fileName(h) || "";
  }
  $(".copy", viewer).hidden = !h.path;
}

async function copyPath() {
  const path = current().path;
  try {
    await navigator.clipboard.writeText(path);
  } catch (e) {  // no clipboard API (a page not served over https or from localhost)
    const field = el("textarea", {value: path, readOnly: true, class: "offscreen"});
    viewer.append(field);
    field.select();
    const done = document.execCommand("copy");
    field.remove();
    if (!done) { note.textContent = "Copying was refused: select the path above"; return; }
  }
  note.textContent = "Path copied";
}

// Tab and Shift+Tab stay among the viewer's own controls.
function trapFocus(ev) {
  const all = [...viewer.querySelectorAll("button, a[href], video[controls], [tabindex]")]
    .filter((e) => !e.disabled && !e.hidden && e.offsetParent !== null && e.tabIndex >= 0);
  if (!all.length) return;
  const first = all[0], end = all[all.length - 1];
  if (ev.shiftKey && (document.activeElement === first || !viewer.contains(document.activeElement))) {
    ev.preventDefault();
    end.focus();
  } else if (!ev.shiftKey && document.activeElement === end) {
    ev.preventDefault();
    first.focus();
  }
}

viewer.addEventListener("keydown", (ev) => {
  if (ev.key === "Tab") { trapFocus(ev); return; }
  if (ev.altKey || ev.ctrlKey || ev.metaKey || ev.target.tagName === "VIDEO") return;
  if (ev.key === "ArrowLeft" || ev.key === "ArrowRight") {
    ev.preventDefault();
    go(ev.key === "ArrowLeft" ? -1 : 1);
  }
});
viewer.addEventListener("cancel", (ev) => { ev.preventDefault(); closeViewer(); });  // Esc
viewer.addEventListener("close", stopVideo);
$(".close", viewer).addEventListener("click", closeViewer);
$(".prev", viewer).addEventListener("click", () => go(-1));
$(".next", viewer).addEventListener("click", () => go(1));
$(".copy", viewer).addEventListener("click", copyPath);
$(".like", viewer).addEventListener("click", () => {
  const h = current();
  closeViewer();
  hooks.like(h);
});
