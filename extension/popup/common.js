// What the popup's modules share: element lookup, the one way to ask the background, the
// User Timing marks, and how a run's page is named.

import { api } from "../lib/ext.js";

export const $ = (id) => document.getElementById(id);

// The host cannot use its database file: say so in plain words before its message, which names
// the file and the command that fixes it.
const STORE_PROBLEMS = {
  store_corrupt: "Hybrid Engine's database file is damaged or empty, so runs cannot be saved or shown.",
  store_read_only: "Hybrid Engine cannot write its database: its folder is read-only.",
  store_full: "The disk that holds Hybrid Engine's database is full.",
  store_unavailable: "Hybrid Engine cannot open its database.",
};

export async function call(type, fields = {}) {
  const reply = await api.runtime.sendMessage({ type, ...fields });
  if (!reply) throw Object.assign(new Error("no answer from the background"), { code: "internal" });
  if (!reply.ok) {
    const code = reply.error?.code;
    const message = reply.error?.message || "failed";
    const plain = STORE_PROBLEMS[code];
    throw Object.assign(new Error(plain ? `${plain} ${message}` : message), { code });
  }
  return reply.result;
}

// The moments a person waits for, as User Timing marks named "popup:<moment>" (DevTools'
// Performance panel shows them; the end-to-end timing tests and bench read them the same way).
export function mark(moment, detail) {
  performance.mark(`popup:${moment}`, detail === undefined ? undefined : { detail });
}

export function markOnce(moment) {
  if (!performance.getEntriesByName(`popup:${moment}`).length) mark(moment);
}

// A run's page ({title, url, site, favicon}, when the host knows it) or, failing that, what
// the run itself says. Page data is untrusted: it only ever becomes text, or a link when
// it is an http(s) URL.
export function pageOf(run) {
  const p = run?.page && typeof run.page === "object" ? run.page : {};
  const title = typeof p.title === "string" && p.title.trim() ? p.title.trim() : null;
  const url = typeof p.url === "string" ? p.url : null;
  let site = typeof p.site === "string" && p.site ? p.site : null;
  if (!site && url) {
    try {
      site = new URL(url).host.replace(/^www\./, "");
    } catch {
      site = null;
    }
  }
  return { title, url, site, favicon: safeFavicon(p.favicon) };
}

// Only an inline image (data:image/png and the like) is shown: a favicon URL comes from the
// page, and loading it would be a request the page chose.
function safeFavicon(value) {
  return typeof value === "string" && /^data:image\/(png|x-icon|vnd\.microsoft\.icon|gif|jpeg|webp);base64,/i.test(value)
    ? value : null;
}

// The name a run goes by: its page's title, else its workflow.
export function runTitle(run) {
  return pageOf(run).title || run?.name || run?.template || run?.id || "";
}

export function setFavicon(img, page) {
  img.hidden = !page.favicon;
  if (page.favicon) img.src = page.favicon;
  else img.removeAttribute("src");
}

export async function copyText(text, button) {
  const label = button.textContent;
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch {
    const area = document.createElement("textarea");
    area.value = text;
    document.body.append(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    button.textContent = ok ? "Copied" : "Copy failed";
  }
  setTimeout(() => { button.textContent = label; }, 1500);
}
