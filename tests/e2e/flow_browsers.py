"""The browsers the whole flow (whole_flow.py) drives, behind the same few verbs: a Browser
opens web tabs and extension pages (`view`), finds a tab's id and reads its badge; a View
evaluates an expression in its page (`ext` is the WebExtension API there), waits on one,
clicks, types, chooses, follows a link into a new tab and takes a screenshot.

Chromium goes through Playwright; Firefox ESR through Marionette (no geckodriver on Debian),
whose scripts run in a sandbox over the page: the page's own globals are reached through
window.wrappedJSObject, and results come back through JSON, as from Playwright.
"""

from __future__ import annotations

from pathlib import Path

from e2e_world import EXT_ORIGIN, GUARD_S, shot, shot_png, wait_for


# ---- Chromium, through Playwright ---------------------------------------------------------------

class ChromiumView:
    def __init__(self, page):
        self.page = page

    @property
    def url(self) -> str:
        return self.page.url

    def js(self, expression: str, arg=None):
        return self.page.evaluate(
            f"async (arg) => {{ const ext = globalThis.browser ?? globalThis.chrome; return await ({expression}); }}",
            arg)

    def wait(self, expression: str, what: str, arg=None):
        return wait_for(lambda: self.js(expression, arg), GUARD_S, 0.1, what)

    def text(self, selector: str) -> str:
        return self.page.inner_text(selector)

    def click(self, selector: str) -> None:
        self.page.click(selector)

    def fill(self, selector: str, text: str, leave: bool = True) -> None:
        self.page.fill(selector, text)
        if leave:
            self.page.press(selector, "Tab")

    def select(self, selector: str, value: str) -> None:
        self.page.select_option(selector, value)

    def follow(self, selector: str) -> ChromiumView:
        """Click a link that opens a tab: the new tab, loaded."""
        with self.page.context.expect_page() as opened:
            self.page.click(selector)
        page = opened.value
        page.wait_for_url(lambda url: url != "about:blank")  # a new tab starts blank
        page.wait_for_load_state()
        return ChromiumView(page)

    def shot(self, name: str) -> Path:
        return shot(self.page, name)

    def close(self) -> None:
        self.page.close()


class ChromiumBrowser:
    name = "chromium"

    def __init__(self, chromium):
        self.chromium = chromium

    def visit(self, url: str) -> None:
        self.chromium.open(url)

    def tab_id(self, url: str) -> int:
        return self.chromium.tab_id(url)

    def view(self, path: str, size=(400, 640)) -> ChromiumView:
        page = self.chromium.ctx.new_page()
        page.set_viewport_size({"width": size[0], "height": size[1]})
        page.goto(f"{EXT_ORIGIN}/{path}")
        return ChromiumView(page)

    def badge(self, tab_id: int) -> tuple[str, str]:
        return tuple(self.chromium.bg("Promise.all([chrome.action.getBadgeText({tabId: arg}), "
                                      "chrome.action.getTitle({tabId: arg})])", tab_id))


# ---- Firefox, through Marionette -------------------------------------------------------------------

class FirefoxView:
    def __init__(self, browser: "FirefoxBrowser", handle: str):
        self.browser = browser
        self.handle = handle

    @property
    def m(self):
        self.browser.focus(self.handle)
        return self.browser.ff.m

    @property
    def url(self) -> str:
        return self.m.get_url()

    def js(self, expression: str, arg=None):
        # Marionette runs this in a sandbox over the page (Xrays): the page's own `browser` is
        # window.wrappedJSObject.browser, and what comes back goes through JSON, as in Chromium.
        return self.m.execute_async_script(
            "const done = arguments[arguments.length - 1]; const arg = arguments[0];"
            "const W = window.wrappedJSObject; const ext = W.browser;"
            f"(async () => {{ const r = await ({expression}); return r === undefined ? null : r; }})()"
            ".then(r => done(JSON.parse(W.JSON.stringify(r))), e => done({error: String(e), stack: e.stack}));",
            script_args=[arg], script_timeout=int(GUARD_S * 1000), new_sandbox=False)

    def wait(self, expression: str, what: str, arg=None):
        return wait_for(lambda: self.js(expression, arg), GUARD_S, 0.1, what)

    def text(self, selector: str) -> str:
        # Found and read in one script: the popup re-renders its lists as answers come in, and
        # an element found by one command was stale by the next (a flake seen in CI).
        text = self.m.execute_script("const e = document.querySelector(arguments[0]);"
                                     " return e === null ? null : e.innerText;", script_args=[selector])
        if text is None:
            raise AssertionError(f"no element matches {selector!r}")
        return text

    def _on_element(self, selector: str, act) -> None:
        """act(element), found again if the page re-rendered it between the find and the act
        (as Playwright's locators do): each Marionette command is a round trip of its own."""
        from marionette_driver.errors import StaleElementException

        for tries_left in range(4, -1, -1):
            try:
                return act(self.m.find_element("css selector", selector))
            except StaleElementException:
                if not tries_left:
                    raise

    def click(self, selector: str) -> None:
        self._on_element(selector, lambda e: e.click())

    def fill(self, selector: str, text: str, leave: bool = True) -> None:
        from marionette_driver.keys import Keys

        def type_in(field) -> None:
            field.clear()
            field.send_keys(text)
            if leave:
                field.send_keys(Keys.TAB)

        self._on_element(selector, type_in)

    def select(self, selector: str, value: str) -> None:
        self._on_element(f'{selector} option[value="{value}"]', lambda e: e.click())

    def follow(self, selector: str) -> FirefoxView:
        m = self.m
        before = set(m.window_handles)
        m.find_element("css selector", selector).click()
        handle = wait_for(lambda: (set(m.window_handles) - before) or None, GUARD_S, 0.1, "the new tab").pop()
        view = FirefoxView(self.browser, handle)
        # A new tab starts on a blank page that is already "complete".
        wait_for(lambda: view.m.get_url() != "about:blank"
                 and view.m.execute_script("return document.readyState") == "complete", GUARD_S, 0.1,
                 "the new tab to load")
        return view

    def shot(self, name: str) -> Path:
        return shot_png(self.m.screenshot(format="binary"), name)

    def close(self) -> None:
        self.browser.close_tab(self.handle)


class FirefoxBrowser:
    name = "firefox"

    def __init__(self, ff):
        self.ff = ff
        self.current = None
        self.control = None  # an extension page that answers tabs.query and action.getBadgeText

    def focus(self, handle: str) -> None:
        if self.current != handle:
            self.ff.m.switch_to_window(handle)
            self.current = handle

    def _open(self, url: str) -> str:
        handle = self.ff.open_tab(url)
        self.current = handle
        return handle

    def _wait_loaded(self, url: str) -> None:
        """The current tab showing `url`, loaded (a new tab is on a blank page, "complete", first)."""
        m = self.ff.m
        wait_for(lambda: m.get_url() == url and m.execute_script("return document.readyState") == "complete",
                 GUARD_S, 0.1, f"{url} to load")

    def visit(self, url: str) -> None:
        self._open(url)
        self._wait_loaded(url)

    def _control(self) -> FirefoxView:
        if self.control is None:
            self.control = self.view("result/result.html")
        return self.control

    def tab_id(self, url: str) -> int:
        found = self._control().js("(await ext.tabs.query({})).filter(t => t.url === arg).map(t => t.id)", url)
        assert found, (url, found)
        return max(found)  # the newest tab showing it

    def view(self, path: str, size=(400, 640)) -> FirefoxView:
        handle = self._open(f"{self.ff.base}/{path}")
        view = FirefoxView(self, handle)
        view.m.set_window_rect(width=max(size[0], 720), height=size[1] + 120)
        self._wait_loaded(f"{self.ff.base}/{path}")
        return view

    def badge(self, tab_id: int) -> tuple[str, str]:
        return tuple(self._control().js("Promise.all([ext.action.getBadgeText({tabId: arg}), "
                                        "ext.action.getTitle({tabId: arg})])", tab_id))

    def close_tab(self, handle: str) -> None:
        self.focus(handle)
        self.ff.m.close()
        self.current = None
        if self.control is not None and self.control.handle == handle:
            self.control = None
        remaining = self.ff.m.window_handles
        if remaining:
            self.focus(remaining[0])
