// PDFs as the file's bytes. A PDF tab (Chromium's viewer, Firefox's pdf.js) cannot be read
// with executeScript, and its text is not in a DOM anyway: the extension fetches the file
// from its URL (with the person's cookies, so a PDF behind a login works) and sends it as
// base64, content_type application/pdf; the host extracts the text page by page.

import { bytes } from "./format.js";

const PDF_MAGIC = [0x25, 0x50, 0x44, 0x46, 0x2d]; // "%PDF-"

// Whether the address names a PDF by its path (…/report.pdf, …/report.PDF?download=1).
// `local`: a file: address counts too. A tab the person opened on a file of theirs may be
// read; a link is the page's choice, and a page never chooses a file of the person's to send.
export function isPdfUrl(url, { local = true } = {}) {
  try {
    const u = new URL(url);
    const schemes = local ? ["http:", "https:", "file:"] : ["http:", "https:"];
    return schemes.includes(u.protocol) && u.pathname.toLowerCase().endsWith(".pdf");
  } catch {
    return false;
  }
}

function startsLikePdf(view) {
  // Readers accept a little junk before the header; look in the first KiB.
  const end = Math.min(view.length - PDF_MAGIC.length, 1024);
  for (let i = 0; i <= end; i++) {
    if (PDF_MAGIC.every((b, j) => view[i + j] === b)) return true;
  }
  return false;
}

export function base64Of(view) {
  // btoa per slice of a multiple of 3 bytes: the slices' encodings join without padding.
  const SLICE = 3 * 16384;
  const parts = [];
  for (let i = 0; i < view.length; i += SLICE) {
    parts.push(btoa(String.fromCharCode.apply(null, view.subarray(i, i + SLICE))));
  }
  return parts.join("");
}

export class PdfFetchError extends Error {}

// The bytes at `url` (fetched with the person's cookies), at most `maxBytes`: {view, type}.
// `what` names the file in errors ("the PDF", "the image").
export async function fetchBytes(url, { maxBytes, what }) {
  let resp;
  try {
    resp = await fetch(url, { credentials: "include" });
  } catch (err) {
    throw new PdfFetchError(`${what} could not be fetched (${err.message || err})`);
  }
  if (!resp.ok) throw new PdfFetchError(`${what} could not be fetched (HTTP ${resp.status})`);
  const declared = Number(resp.headers.get("content-length") || 0);
  if (declared > maxBytes) throw new PdfFetchError(`${what} is ${bytes(declared)}, over the ${bytes(maxBytes)} capture limit`);
  const view = await readCapped(resp, maxBytes, what);
  return { view, type: (resp.headers.get("content-type") || "").split(";")[0].trim().toLowerCase() };
}

// The body read chunk by chunk and given up on as soon as it passes `maxBytes`: a server that
// sends no length (or a false one) and an endless body would otherwise fill the memory of the
// extension's background before any size was checked.
async function readCapped(resp, maxBytes, what) {
  const over = () => new PdfFetchError(`${what} is over the ${bytes(maxBytes)} capture limit`);
  if (!resp.body) {
    const view = new Uint8Array(await resp.arrayBuffer());
    if (view.length > maxBytes) throw over();
    return view;
  }
  const reader = resp.body.getReader();
  const chunks = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.length;
    if (total > maxBytes) {
      reader.cancel().catch(() => {});
      throw over();
    }
    chunks.push(value);
  }
  const view = new Uint8Array(total);
  let at = 0;
  for (const chunk of chunks) {
    view.set(chunk, at);
    at += chunk.length;
  }
  return view;
}

// {content (base64), bytes} of the PDF at `url`, or null when what is there is not a PDF.
// PdfFetchError says why it could not be had (HTTP status, size over `maxBytes`).
async function fetchPdf(url, { maxBytes }) {
  const { view, type } = await fetchBytes(url, { maxBytes, what: "the PDF" });
  if (!startsLikePdf(view)) {
    if (type === "application/pdf") throw new PdfFetchError("the file served as a PDF is not one (no %PDF- header)");
    return null;
  }
  return { content: base64Of(view), bytes: view.length };
}

// A `page` for the host's capture: the PDF's bytes, or null when the URL is not a PDF.
export async function pdfPage(url, { maxBytes, title, sourceUrl, kind }) {
  const pdf = await fetchPdf(url, { maxBytes });
  if (!pdf) return null;
  // A data: or blob: address is the file itself (megabytes) or nothing to go back to: it names
  // no page, so it is neither the title nor the address kept.
  const addressed = /^(https?|file):/i.test(url);
  return {
    content: pdf.content,
    source_url: sourceUrl || (addressed ? url : null),
    content_type: "application/pdf",
    title: title || (addressed ? fileName(url) : "document.pdf"),
    selection: null,
    metadata: { kind, pdf_url: addressed ? url : url.slice(0, url.indexOf(":") + 1), pdf_bytes: pdf.bytes },
  };
}

// The last part of the address's path, decoded where it can be (a page's link may hold a
// malformed %-escape, which decodeURIComponent throws on).
function fileName(url) {
  const last = new URL(url).pathname.split("/").pop() || "document.pdf";
  try {
    return decodeURIComponent(last);
  } catch {
    return last;
  }
}
