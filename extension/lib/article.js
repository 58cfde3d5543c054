// The page's article as Mozilla Readability sees it in the rendered document (what the
// reader sees, after scripts ran and lazy content loaded), sent beside the raw HTML so
// the host can choose between it and its own extraction (host: hybrid_engine/article.py).
// Readability runs on a clone, so the page itself is never changed. Any failure just
// means no article: the HTML alone still goes.

import { api } from "./ext.js";

const READABILITY_FILE = "vendor/readability/Readability.js";

// ---- injected into the page after READABILITY_FILE (must be self-contained) ------------

function readArticle(maxBytes, html) {
  if (typeof Readability !== "function") return { error: "Readability did not load" };
  // The page as captured (text a reader could not see already taken out, lib/capture.js), so
  // hidden text cannot reach the model through the article either; a parsed document keeps
  // the page's address, so relative links resolve as they do on the page.
  const source = typeof html === "string" ? new DOMParser().parseFromString(html, "text/html") : document.cloneNode(true);
  const article = new Readability(source).parse();
  if (!article || !article.content) return null;
  const size = new Blob([article.content]).size;
  if (size > maxBytes) return { error: `the article is ${size} bytes, over ${maxBytes}` };
  return {
    content: article.content,
    title: article.title || null,
    byline: article.byline || null,
    excerpt: article.excerpt || null,
    site_name: article.siteName || null,
    length: article.length || 0,
  };
}

// Readability's code in the frame, ahead of readArticle. Loading it costs a round trip to
// the page: started beside the page's own read (capture.js), it is not waited for after.
export function loadReadability(tabId, frameId = 0) {
  const target = { tabId };
  if (Number.isInteger(frameId) && frameId > 0) target.frameIds = [frameId];
  // injectImmediately, as for the page itself (capture.js): otherwise the browser waits for
  // document_idle, that is for every deferred third-party script of a news page.
  return api.scripting.executeScript({ target, files: [READABILITY_FILE], injectImmediately: true })
    .then(() => true, () => false);
}

// {content (HTML), title, byline, excerpt, site_name, length} or null. `frameId` 0 (or
// absent) is the top document; `loaded` is loadReadability's promise when it was started already.
export async function captureArticle(tabId, { frameId = 0, maxBytes = 8 * 1024 * 1024, html = null, loaded = null } = {}) {
  const target = { tabId };
  if (Number.isInteger(frameId) && frameId > 0) target.frameIds = [frameId];
  try {
    if (!(await (loaded || loadReadability(tabId, frameId)))) return null;
    const [first] = await api.scripting.executeScript({ target, func: readArticle, args: [maxBytes, html],
                                                         injectImmediately: true });
    const result = first && first.result;
    if (!result || result.error) return null;
    return result;
  } catch {
    return null;
  }
}
