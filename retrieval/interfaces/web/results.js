// The grid of results: one card per hit, its picture a button that opens the viewer. Cards'
// thumbnails load lazily, in the size the grid shows them (srcset, `sizes` measured from the
// grid's columns). Arrow keys move between cards, Enter or Space opens one.
import {$, el, excerpt, fileName, imageOf, marked, srcset, thumbUrl, timeSpan} from "./util.js";

const CARD_SIZES = [128, 256, 512];

// The card's picture: an image's or a shot's thumbnail (with the shot's time), a text.
function picture(h, match) {
  const img = imageOf(h);
  if (h.kind === "text" && img === undefined) {
    const own = match.source === "ocr" ? excerpt(h.text || "", match.words) : h.text || "";
    return marked(el("span", {class: "text"}), own, match.words);
  }
  const name = fileName(h);
  const frame = el("img", {alt: h.kind === "image" && h.text ? h.text : name, loading: "lazy",
                           decoding: "async", width: 256, height: 256});
  frame.dataset.item = img;
  frame.addEventListener("error", () => frame.classList.add("broken"));
  if (h.kind === "text") return el("span", {class: "pair"}, frame, marked(
    el("span", {class: "text"}), excerpt(h.text || "", match.words), match.words));
  if (h.kind === "video") return el("span", {class: "pair"}, frame, el("span", {
    class: "time", text: timeSpan(h)}));
  return frame;
}

function details(h, match) {
  const m = h.metadata || {};
  const words = (source) => match.source === source ? match.words : [];
  const name = el("span", {class: "name", text: fileName(h), id: `name-${h.id}`});
  const score = el("span", {class: "score", text: h.score === null ? "" : h.score.toFixed(3)});
  const caption = marked(el("div", {class: "caption"}), h.kind === "image" && h.text ? h.text
    : "", words("caption"));
  const generated = el("div", {class: "generated"});
  if (m.generated_caption) {
    marked(generated, m.generated_caption, words("generated"));
    generated.prepend("generated: ");
  } else if (m.source === "generated") {
    generated.textContent = "(generated caption)";
  }
  // The text recognised in an image (OCR), labelled in words, its matched words marked.
  const ocr = el("div", {class: "ocr"});
  if (m.ocr_text) {
    marked(ocr, excerpt(m.ocr_text, words("ocr")), words("ocr"));
    ocr.prepend("text in image: ");
  } else if (m.source === "ocr") {
    ocr.textContent = "(text recognised in an image)";
  }
  return el("div", {class: "meta"}, score, " ", name, caption, generated, ocr);
}

// The grid's cards for `hits`; `open(i)` opens the i-th in the viewer, `like(h)` searches
// for more like it.
export function showCards(hits, open, like) {
  const grid = $("#grid");
  grid.textContent = "";
  hits.forEach((h, i) => {
    const match = (h.metadata || {}).match || {};
    const name = fileName(h);
    const view = el("button", {type: "button", class: "open",
                               title: name ? `View ${name}` : "View this text"},
                    picture(h, match));
    view.addEventListener("click", () => open(i));
    const more = el("button", {type: "button", class: "more", text: "more like this",
                               "aria-describedby": `name-${h.id}`});
    more.addEventListener("click", () => like(h));
    grid.appendChild(el("li", {class: "hit", "data-id": h.id}, view, details(h, match), more));
  });
  sizeThumbnails();
}

// Each thumbnail's `sizes` is the width of the grid's columns: the browser then takes the
// smallest file of `srcset` that fills it at the screen's density.
export function sizeThumbnails() {
  const grid = $("#grid");
  const column = parseFloat(getComputedStyle(grid).gridTemplateColumns) || 256;
  for (const img of grid.querySelectorAll("img[data-item]")) {
    img.sizes = `${Math.ceil(column)}px`;
    if (!img.srcset) {
      img.srcset = srcset(img.dataset.item, CARD_SIZES);
      img.src = thumbUrl(img.dataset.item, 256);
    }
  }
}
new ResizeObserver(() => sizeThumbnails()).observe($("#grid"));

// Arrow keys between the cards' buttons: left and right one card, up and down one row.
$("#grid").addEventListener("keydown", (ev) => {
  const step = {ArrowLeft: -1, ArrowRight: 1, ArrowUp: "up", ArrowDown: "down"}[ev.key];
  const here = ev.target.closest(".hit");
  if (step === undefined || !here || ev.altKey || ev.ctrlKey || ev.metaKey) return;
  const cards = [...document.querySelectorAll("#grid .hit")];
  const i = cards.indexOf(here);
  const perRow = cards.filter((c) => c.offsetTop === cards[0].offsetTop).length || 1;
  const to = typeof step === "number" ? i + step : i + (step === "up" ? -perRow : perRow);
  if (to < 0 || to >= cards.length) return;
  ev.preventDefault();
  const same = ev.target.classList.contains("more") ? ".more" : ".open";
  cards[to].querySelector(same).focus();
});
