// Turning what the person points at into a `page` for the host's `capture` message:
// {content, source_url, content_type, title, selection, metadata}. The page itself is read
// with scripting.executeScript (activeTab grants it for the toolbar, the context menu and
// the keyboard shortcut). Pages that cannot be scripted still give their URL and title,
// and metadata.content_missing says why the content is not there.

import { captureArticle, loadReadability } from "./article.js";
import { api } from "./ext.js";
import { bytes } from "./format.js";
import { fetchImage } from "./image.js";
import { PdfFetchError, isPdfUrl, pdfPage } from "./pdf.js";

export const DEFAULT_MAX_BYTES = 8 * 1024 * 1024;
const PARSE_WAIT_MS = 3000; // how long a page whose parser is held up is waited for

const STORE_HOSTS = ["chrome.google.com/webstore", "chromewebstore.google.com", "microsoftedge.microsoft.com/addons",
                     "addons.mozilla.org", "addons.opera.com"];

// Why a URL cannot be scripted, or null when it may be.
function unscriptableReason(url) {
  if (!url) return "the browser did not give this tab's address to the extension";
  // A window a page opened and wrote into is readable as that page (and judged by its site).
  if (/^about:(blank|srcdoc)$/i.test(url)) return null;
  let u;
  try {
    u = new URL(url);
  } catch {
    return "the address is not a web page";
  }
  const where = `${u.host}${u.pathname}`;
  if (STORE_HOSTS.some((h) => where.startsWith(h))) {
    return "browser extension stores do not let extensions read their pages";
  }
  if (["chrome:", "edge:", "brave:", "vivaldi:", "opera:", "about:", "devtools:", "view-source:",
       "chrome-search:", "chrome-untrusted:", "resource:", "jar:"].includes(u.protocol)) {
    return `browser pages (${u.protocol}//) cannot be read by extensions`;
  }
  if (["chrome-extension:", "moz-extension:", "extension:"].includes(u.protocol)) {
    return "pages of other extensions cannot be read";
  }
  return null;
}

function describeFailure(url, err) {
  const why = unscriptableReason(url);
  if (why) return why;
  const text = (err && (err.message || String(err))) || "unknown error";
  if (/pdf/i.test(text)) return "the browser's PDF viewer cannot be read by extensions";
  if (/file:/.test(url || "") || /file/i.test(text)) {
    return "file pages need \"Allow access to file URLs\" turned on for this extension";
  }
  if (/permission|Cannot access|Missing host/i.test(text)) {
    return "the extension has no access to this page: click the toolbar button, the context menu or the "
      + "keyboard shortcut on the page itself";
  }
  return `the page could not be read (${text})`;
}

function byteLength(text) {
  return new Blob([text]).size;
}

// ---- injected into the page (must be self-contained) ----------------------------------

// Text a reader could not see is left out of the page that is sent: elements hidden by
// display, visibility, opacity, zero size, clipping, aria-hidden or a position off the page,
// and text in the colour of its background or too small to read. Such text is a known way to
// slip instructions to an AI assistant. The live page is never changed: its computed styles
// are read and the matching elements are removed from a copy, which is what is serialised.
async function readPage(maxBytes, waitMs) {
  if (document.contentType === "application/pdf") return { pdf: true, url: location.href };
  // Injected at once (injectImmediately): the page is read as soon as its parser is done
  // ("interactive"), not after its deferred scripts, images and third-party loads. A parser
  // held up longer than waitMs (a synchronous script that does not arrive) gives what it has.
  let partial = false;
  if (document.readyState === "loading") {
    partial = await new Promise((resolve) => {
      const timer = setTimeout(() => resolve(true), waitMs);
      document.addEventListener("readystatechange", () => {
        clearTimeout(timer);
        resolve(false);
      }, { once: true });
    });
  }
  // Hidden text is judged by computed style, so a stylesheet still on its way would let text
  // it hides through: wait for the page's stylesheets too (within the same wait).
  const pendingSheets = [...document.querySelectorAll('link[rel~="stylesheet" i]')]
    .filter((l) => !l.sheet && !l.disabled && (!l.media || matchMedia(l.media).matches)
      && !performance.getEntriesByName(l.href).length); // fetched already: loaded or failed
  if (pendingSheets.length) {
    const settled = Promise.all(pendingSheets.map((l) => new Promise((resolve) => {
      l.addEventListener("load", resolve, { once: true });
      l.addEventListener("error", resolve, { once: true });
      if (l.sheet) resolve();
    })));
    const late = await Promise.race([settled.then(() => false),
                                     new Promise((resolve) => setTimeout(() => resolve(true), waitMs))]);
    partial = partial || late;
  }
  const size = (s) => new Blob([s]).size;
  const KEEP = new Set(["SCRIPT", "STYLE", "LINK", "META", "BASE", "TITLE", "HEAD", "HTML", "BODY", "BR", "WBR"]);
  const BLOCK = /^(block|flex|grid|list-item|table|table-row|table-caption|flow-root)/;

  function rgba(text) {
    const m = /^rgba?\(([^)]+)\)$/.exec(text || "");
    if (!m) return null;
    const parts = m[1].split(/[\s,/]+/).filter(Boolean).map((p) => (p.endsWith("%") ? parseFloat(p) / 100 : parseFloat(p)));
    if (parts.length < 3 || parts.some((n) => Number.isNaN(n))) return null;
    return { r: parts[0], g: parts[1], b: parts[2], a: parts.length > 3 ? parts[3] : 1 };
  }
  function luminance(c) {
    const lin = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * lin(c.r) + 0.7152 * lin(c.g) + 0.0722 * lin(c.b);
  }
  // The colour behind an element's text: the nearest background colour up the tree (an image
  // or gradient makes it unknown), over the page's white canvas. Remembered per element, so
  // a deep page costs one look per element, not one per element and ancestor.
  const WHITE = { r: 255, g: 255, b: 255, a: 1 };
  const backgrounds = new Map();
  const contrast = new Map(); // "colour|fill|background" -> too close to read
  function backgroundOf(el, own) {
    if (!el || el.nodeType !== 1) return WHITE;
    if (backgrounds.has(el)) return backgrounds.get(el);
    const st = own || getComputedStyle(el);
    let bg;
    if (st.backgroundImage && st.backgroundImage !== "none") bg = null;
    else {
      const c = rgba(st.backgroundColor);
      if (c && c.a >= 1) bg = c;
      else if (c && c.a > 0) {
        const k = c.a;
        bg = { r: c.r * k + 255 * (1 - k), g: c.g * k + 255 * (1 - k), b: c.b * k + 255 * (1 - k), a: 1 };
      } else bg = backgroundOf(el.parentElement);
    }
    backgrounds.set(el, bg);
    return bg;
  }
  function ownText(el) {
    for (const n of el.childNodes) if (n.nodeType === 3 && n.data.trim()) return true;
    return false;
  }
  // A transform that squashes the box to no area (scale(0), scaleY(0)): its text is not drawn.
  function flattened(transform) {
    const m = /^matrix(3d)?\(([^)]*)\)$/.exec(transform);
    if (!m) return false;
    const n = m[2].split(",").map(parseFloat);
    const [a, b, c, d] = m[1] ? [n[0], n[1], n[4], n[5]] : n;
    return Math.abs(a * d - b * c) < 1e-3;
  }
  // A colour with alpha over the background, as the reader sees it.
  function over(c, bg) {
    const k = c.a;
    return { r: c.r * k + bg.r * (1 - k), g: c.g * k + bg.g * (1 - k), b: c.b * k + bg.b * (1 - k), a: 1 };
  }
  const pageWidth = Math.max(document.documentElement.scrollWidth, innerWidth);
  // "all": the element and everything in it are out of sight; "text": its own text is.
  function hidden(el, st) {
    if (el.getAttribute("aria-hidden") === "true") return "all";
    if (st.display === "none") return "all";
    if (typeof el.checkVisibility === "function"
        && !el.checkVisibility({ opacityProperty: true, visibilityProperty: false, contentVisibilityAuto: false })) {
      return "all";
    }
    if (parseFloat(st.opacity) < 0.05) return "all"; // 0.01 is as unreadable as 0
    if (st.transform && st.transform !== "none" && flattened(st.transform)) return "all";
    const clipPath = st.clipPath || "";
    if (/inset\((50|100)%|circle\(0|polygon\(0px 0px(, 0px 0px)*\)/.test(clipPath)) return "all";
    if (st.clip && /^rect\(/.test(st.clip) && (st.position === "absolute" || st.position === "fixed")) {
      const n = st.clip.match(/-?[\d.]+px/g) || [];
      if (n.length === 4) {
        const [top, right, bottom, left] = n.map(parseFloat);
        if (right - left <= 1 || bottom - top <= 1) return "all";
      }
    }
    // Only a box that clips its content, a picture, or one taken out of the flow can hide by
    // its size or place: the others are not measured (a layout query per element is slow).
    const clipped = st.overflowX !== "visible" || st.overflowY !== "visible";
    const media = /^(IMG|SVG|CANVAS|VIDEO|PICTURE)$/i.test(el.tagName);
    const placed = st.position === "absolute" || st.position === "fixed";
    if (st.display !== "contents" && (clipped || media || placed)) {
      const r = el.getBoundingClientRect();
      if ((r.width <= 1 || r.height <= 1) && (clipped || media)) return "all";
      if (placed && r.width > 0 && r.height > 0) {
        const left = r.left + scrollX, top = r.top + scrollY;
        if (left + r.width <= 0 || top + r.height <= 0 || left >= pageWidth) return "all";
      }
    }
    if (!ownText(el)) return null;
    if (st.visibility !== "visible") return "text";
    if (parseFloat(st.fontSize) < 2) return "text";
    if (parseFloat(st.textIndent) <= -999) return "text";
    const bg = backgroundOf(el, st); // null: an image behind the text, only transparency tells
    // Most text on a page shares a few colour pairs: each pair is judged once.
    const pair = `${st.color}|${st.webkitTextFillColor}|${bg ? `${bg.r},${bg.g},${bg.b}` : "image"}`;
    let unseen = contrast.get(pair);
    if (unseen === undefined) {
      const fg = rgba(st.color);
      const fill = rgba(st.webkitTextFillColor);
      const ink = fill || fg;
      unseen = !!((fg && fg.a === 0) || (fill && fill.a === 0) || (ink && ink.a < 0.05));
      if (!unseen && bg && ink) {
        const [hi, lo] = [luminance(over(ink, bg)), luminance(bg)].sort((a, b) => b - a);
        unseen = (hi + 0.05) / (lo + 0.05) < 1.1;
      }
      contrast.set(pair, unseen);
    }
    if (unseen) return "text";
    return null;
  }

  const root = document.documentElement;
  const copy = root.cloneNode(true);
  // cloneNode keeps the tree's shape: the nth element of the page's body is the nth of the copy's.
  const liveBody = document.body;
  const copyBody = liveBody ? copy.getElementsByTagName(liveBody.tagName)[0] : null;
  const live = liveBody && copyBody ? [...liveBody.getElementsByTagName("*")] : [];
  const mirror = live.length ? [...copyBody.getElementsByTagName("*")] : [];
  const drop = [], mute = [], blocks = [];
  let skipUntil = null;
  for (let i = 0; i < live.length; i++) {
    const el = live[i];
    if (skipUntil && skipUntil.contains(el)) continue;
    skipUntil = null;
    if (KEEP.has(el.tagName.toUpperCase())) continue;
    if (el.tagName === "SELECT") { // its options are not boxes of their own
      skipUntil = el;
      continue;
    }
    const st = getComputedStyle(el);
    const verdict = hidden(el, st);
    if (verdict === "all") {
      drop.push(mirror[i]);
      skipUntil = el;
    } else {
      if (verdict === "text") mute.push(mirror[i]);
      if (BLOCK.test(st.display)) blocks.push(mirror[i]);
    }
  }
  for (const el of mute) {
    for (const n of [...el.childNodes]) if (n.nodeType === 3) n.remove();
    // Its hidden text is gone; what is left inside was visible, and an extractor that drops
    // boxes styled visibility:hidden would drop that too.
    if (el.style) el.style.removeProperty("visibility");
  }
  for (const el of drop) el.remove();
  // A <template>'s content is never drawn, and the walk above cannot see it (it is not in the
  // tree), yet the copy's HTML would carry it.
  for (const el of copy.querySelectorAll("template")) {
    el.remove();
    drop.push(el);
  }

  const doctype = document.doctype ? `<!DOCTYPE ${document.doctype.name}>\n` : "";
  const html = doctype + copy.outerHTML;
  const out = {
    url: location.href,
    origin: self.origin, // the document's origin: location.origin is that of its URL ("null" for about:blank)
    title: document.title,
    selection: String(getSelection() || ""),
    lang: document.documentElement.lang || null,
    htmlBytes: size(html),
    hidden: { elements: drop.length, texts: mute.length },
    partial,
  };
  if (out.htmlBytes <= maxBytes) {
    out.content = html;
    out.contentType = document.contentType === "application/xhtml+xml" ? "application/xhtml+xml" : "text/html";
    return out;
  }
  // Over the cap: the visible text is usually a small fraction of the HTML. The page's own
  // innerText when nothing was hidden; otherwise taken from the copy (hidden text already
  // out), with a line break after each block as innerText has.
  let text;
  if (!drop.length && !mute.length) {
    text = document.body ? document.body.innerText : document.documentElement.textContent;
  } else {
    const body = copy.querySelector("body") || copy;
    for (const el of body.querySelectorAll("script, style, template")) el.remove();
    for (const el of blocks) el.append("\n");
    text = body.textContent.replace(/[ \t\r\f]+/g, " ").replace(/ ?\n[\n ]*/g, "\n").trim();
  }
  out.textBytes = size(text);
  if (out.textBytes > maxBytes) {
    let cut = Math.floor(text.length * (maxBytes / out.textBytes));
    while (cut > 0 && size(text.slice(0, cut)) > maxBytes) cut = Math.floor(cut * 0.95);
    text = text.slice(0, cut);
    out.truncated = true;
  }
  out.content = text;
  out.contentType = "text/plain";
  return out;
}

function readTarget(kind, url) {
  // Link text for a link, alt text for an image: the context menu gives only the URL.
  const sel = String(getSelection() || "");
  if (kind === "link") {
    for (const a of document.querySelectorAll("a[href]")) {
      if (a.href === url) return { text: (a.innerText || a.textContent || "").trim(), title: document.title, selection: sel };
    }
  } else if (kind === "image") {
    for (const img of document.images) {
      if (img.currentSrc === url || img.src === url) return { text: img.alt || "", title: document.title, selection: sel };
    }
  } else {
    return { text: sel, title: document.title, selection: sel };
  }
  return { text: "", title: document.title, selection: sel };
}

// ---- the captures ------------------------------------------------------------------------

async function runInTab(tabId, frameId, func, args) {
  const target = { tabId };
  if (Number.isInteger(frameId) && frameId > 0) target.frameIds = [frameId];
  // injectImmediately: without it Firefox waits for document_idle, that is for every
  // third-party load of a news page (15 s seen) before it reads a DOM that was ready long before.
  const [first] = await api.scripting.executeScript({ target, func, args, injectImmediately: true });
  if (!first) throw new Error("the script gave no result");
  if (first.error) throw new Error(first.error.message || String(first.error));
  return first.result;
}

// The whole page (kind "page"). `tab` needs at least {id}; url and title are used when the
// page cannot be read.
export async function capturePage(tab, { maxBytes = DEFAULT_MAX_BYTES } = {}) {
  const started = performance.now();
  const fallbackUrl = tab.url || tab.pendingUrl || "";
  if (isPdfUrl(fallbackUrl)) return { ...(await capturePdf(tab, fallbackUrl, maxBytes)), ms: performance.now() - started };
  const reason = unscriptableReason(fallbackUrl);
  if (!reason || !fallbackUrl) {
    try {
      const readability = loadReadability(tab.id); // beside the read, not after it
      const r = await runInTab(tab.id, 0, readPage, [maxBytes, PARSE_WAIT_MS]);
      if (r.pdf) return { ...(await capturePdf(tab, r.url, maxBytes)), ms: performance.now() - started };
      const page = {
        content: r.content,
        source_url: pageAddress(r.url, r.origin),
        content_type: r.contentType,
        title: r.title,
        selection: r.selection || null,
        metadata: { kind: "page", html_bytes: r.htmlBytes, lang: r.lang, hidden_left_out: r.hidden },
      };
      // The icon the browser shows for the tab, for the library to show beside the run; the
      // host keeps it only when it is an http(s) or data:image URL and never fetches it.
      if (tab.favIconUrl) page.metadata.favicon = tab.favIconUrl;
      let notice = null;
      if (r.partial) {
        page.metadata.partial = true;
        notice = "The page was still loading: this is what it showed so far.";
      }
      if (r.contentType === "text/plain") {
        notice = `The page's HTML is ${bytes(r.htmlBytes)}, over the ${bytes(maxBytes)} limit: `
          + (r.truncated ? `sent the first ${bytes(maxBytes)} of its text instead.`
                         : `sent its text (${bytes(r.textBytes)}) instead.`);
        page.metadata.size_cap = { limit_bytes: maxBytes, html_bytes: r.htmlBytes, truncated: !!r.truncated, notice };
      }
      const read = performance.now() - started;
      if (r.contentType !== "text/plain") await addArticle(page, tab.id, maxBytes, readability);
      return { page, notice, ms: performance.now() - started, readMs: read };
    } catch (err) {
      // Chromium's PDF viewer at an address without .pdf: the file itself is still at the URL.
      if (/pdf/i.test(err?.message || "")) {
        return { ...(await capturePdf(tab, fallbackUrl, maxBytes)), ms: performance.now() - started };
      }
      return { ...missingContent(tab, describeFailure(fallbackUrl, err), "page"), ms: performance.now() - started };
    }
  }
  return { ...missingContent(tab, reason, "page"), ms: performance.now() - started };
}

// Readability's article from the rendered page goes beside the HTML (lib/article.js).
async function addArticle(page, tabId, maxBytes, loaded) {
  const html = page.content_type === "text/html" || page.content_type === "application/xhtml+xml" ? page.content : null;
  if (html === null) return; // over the size cap, sent as text: no HTML for an article either
  const article = await captureArticle(tabId, { maxBytes, html, loaded });
  if (!article) return;
  page.article = article.content;
  page.metadata.article = { title: article.title, byline: article.byline, site_name: article.site_name,
                            length: article.length };
}

// A PDF tab: the file's bytes (lib/pdf.js); what went wrong is said, with the address sent.
async function capturePdf(tab, url, maxBytes) {
  try {
    const page = await pdfPage(url, { maxBytes, title: tab.title && tab.title !== url ? tab.title : null,
                                      kind: "pdf" });
    if (page) return { page, notice: null };
    return missingContent(tab, "the address looks like a PDF but the file is not one", "pdf");
  } catch (err) {
    if (!(err instanceof PdfFetchError)) throw err;
    return missingContent(tab, err.message, "pdf");
  }
}

// An about:blank or about:srcdoc document holds what the page that made it wrote there (a
// bank's "print statement" window): its site, for the rules, is that page's origin.
function pageAddress(url, origin) {
  if (/^about:/i.test(url || "") && origin && origin !== "null") return `${origin}/`;
  return url;
}

function missingContent(tab, reason, kind) {
  const url = tab.url || tab.pendingUrl || "";
  const title = tab.title || url;
  return {
    page: {
      content: [title, url].filter(Boolean).join("\n"),
      source_url: url || null,
      content_type: "text/plain",
      title: title || null,
      selection: null,
      metadata: { kind, content_missing: reason },
    },
    notice: `Sent only the address and title: ${reason}.`,
  };
}

// What a context-menu click points at: info is the contextMenus OnClickData.
export function kindOf(info) {
  if (info.mediaType === "image" && info.srcUrl) return "image";
  if (info.linkUrl) return "link";
  if (info.selectionText) return "selection";
  return "page";
}

export async function captureFromMenu(kind, info, tab, options = {}) {
  if (kind === "page") return capturePage(tab, options);
  const pageUrl = info.pageUrl || tab.url || null;
  const targetUrl = kind === "link" ? info.linkUrl : kind === "image" ? info.srcUrl : null;
  let found = { text: "", title: tab.title || "", selection: info.selectionText || "" };
  let notice = null;
  if (!unscriptableReason(info.frameUrl || pageUrl)) {
    try {
      found = await runInTab(tab.id, info.frameId, readTarget, [kind, targetUrl]);
    } catch (err) {
      notice = `Could not read the page for more detail: ${describeFailure(pageUrl, err)}.`;
    }
  }
  const title = found.title || tab.title || null;
  if (kind === "selection") {
    // The page's own selection keeps line breaks; the menu's selectionText flattens them.
    const text = found.selection || info.selectionText || "";
    return {
      page: { content: text, source_url: pageUrl, content_type: "text/plain", title, selection: text,
              metadata: { kind: "selection" } },
      notice,
    };
  }
  // A link from a web page to a file: PDF is sent as its address: only a local page may point
  // at a local file.
  if (kind === "link" && isPdfUrl(info.linkUrl, { local: /^file:/i.test(pageUrl || "") })) {
    // A link to a PDF: the file itself, so the workflow reads the document, not its address.
    try {
      const page = await pdfPage(info.linkUrl, { maxBytes: options.maxBytes || DEFAULT_MAX_BYTES,
                                                 title: found.text || info.linkText || null, sourceUrl: info.linkUrl,
                                                 kind: "pdf" });
      if (page) {
        page.metadata.page_url = pageUrl;
        return { page, notice };
      }
    } catch (err) {
      if (!(err instanceof PdfFetchError)) throw err;
      notice = `Sent the link only: ${err.message}.`;
    }
  }
  if (kind === "link") {
    const text = found.text || info.linkText || "";
    return {
      page: { content: info.linkUrl, source_url: pageUrl, content_type: "text/plain", title,
              selection: found.selection || info.selectionText || null,
              metadata: { kind: "link", link_url: info.linkUrl, link_text: text } },
      notice,
    };
  }
  const alt = found.text || "";
  // The image's bytes, for a vision model (lib/image.js). When they cannot be had (too large,
  // not an image, another site that does not let the extension fetch it) the address goes, and
  // the reason is both shown and kept with the capture.
  let image;
  try {
    image = await fetchImage(info.srcUrl, { maxBytes: options.maxBytes || DEFAULT_MAX_BYTES });
  } catch (err) {
    const reason = err.message || String(err);
    return {
      page: { content: info.srcUrl, source_url: pageUrl, content_type: "text/plain", title, selection: null,
              metadata: { kind: "image", image_url: info.srcUrl, image_alt: alt, image_missing: reason } },
      notice: `Sent the image's address only: ${reason}.`,
    };
  }
  return {
    page: { content: image.content, source_url: pageUrl, content_type: image.content_type, title,
            selection: null, metadata: { kind: "image", image_url: info.srcUrl, image_alt: alt,
                                         image_bytes: image.bytes } },
    notice,
  };
}
