// A classic script, run as soon as the popup's <head> is read, before its modules are
// fetched: it asks the background to start the estimate of the workflow the popup will
// offer first (capturing the page and the host's extraction take most of the wait), and
// the popup's own ask for it joins that one. It shows nothing and changes nothing.
(() => {
  const api = globalThis.browser ?? globalThis.chrome;
  const tab = new URLSearchParams(location.search).get("tab");
  performance.mark("popup:early");
  try {
    const sent = api.runtime.sendMessage({ type: "estimate.early", tabId: tab === null ? null : Number(tab) });
    if (sent && typeof sent.catch === "function") sent.catch(() => {});
  } catch {
    // the background is restarting: the popup asks for its estimate itself
  }
})();
