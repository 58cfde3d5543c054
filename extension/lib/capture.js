// Turning what the person points at into a `page` for the host's `capture` message:
// {content, source_url, content_type, title, selection, metadata}. The page itself is read
// with scripting.executeScript (activeTab grants it for the toolbar, the context menu and
// the keyboard shortcut). Pages that cannot be scripted still give their URL and title,
// and metadata.content_missing says why the content is not there.

import { captureArticle } from "./article.js";
import { api } from "./ext.js";
import { bytes } from "./format.js";
import { fetchImage } from "./image.js";
import { PdfFetchError, isPdfUrl, pdfPage } from "./pdf.js";

export const DEFAULT_MAX_BYTES = 8 * 1024 * 1024;

const STORE_HOSTS = ["chrome.google.com/webstore", "chromewebstore.google.com", "microsoftedge.microsoft.com/addons",
                     "addons.mozilla.org", "addons.opera.com"];

// Why a URL cannot be scripted, or null when it may be.
function unscriptableReason(url) {
  if (!url) return "the browser did not give this tab's address to the extension";
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

function readPage(maxBytes) {
  if (document.contentType === "application/pdf") return { pdf: true, url: location.href };
  const size = (s) => new Blob([s]).size;
  const doctype = document.doctype ? `<!DOCTYPE ${document.doctype.name}>\n` : "";
  const html = doctype + document.documentElement.outerHTML;
  const out = {
    url: location.href,
    title: document.title,
    selection: String(getSelection() || ""),
    lang: document.documentElement.lang || null,
    htmlBytes: size(html),
  };
  if (out.htmlBytes <= maxBytes) {
    out.content = html;
    out.contentType = document.contentType === "application/xhtml+xml" ? "application/xhtml+xml" : "text/html";
    return out;
  }
  // Over the cap: the visible text is usually a small fraction of the HTML.
  let text = document.body ? document.body.innerText : document.documentElement.textContent;
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
  const [first] = await api.scripting.executeScript({ target, func, args });
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
      const r = await runInTab(tab.id, 0, readPage, [maxBytes]);
      if (r.pdf) return { ...(await capturePdf(tab, r.url, maxBytes)), ms: performance.now() - started };
      const page = {
        content: r.content,
        source_url: r.url,
        content_type: r.contentType,
        title: r.title,
        selection: r.selection || null,
        metadata: { kind: "page", html_bytes: r.htmlBytes, lang: r.lang },
      };
      let notice = null;
      if (r.contentType === "text/plain") {
        notice = `The page's HTML is ${bytes(r.htmlBytes)}, over the ${bytes(maxBytes)} limit: `
          + (r.truncated ? `sent the first ${bytes(maxBytes)} of its text instead.`
                         : `sent its text (${bytes(r.textBytes)}) instead.`);
        page.metadata.size_cap = { limit_bytes: maxBytes, html_bytes: r.htmlBytes, truncated: !!r.truncated, notice };
      } else {
        await addArticle(page, tab.id, maxBytes);
      }
      return { page, notice, ms: performance.now() - started };
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
async function addArticle(page, tabId, maxBytes) {
  const article = await captureArticle(tabId, { maxBytes });
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
  if (kind === "link" && isPdfUrl(info.linkUrl)) {
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
