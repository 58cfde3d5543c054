"""extension/lib/sites.js decides as host/hybrid_engine/sites.py does: the same rules cover
the same page URLs, so the extension refuses early exactly the pages the host would refuse."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from hybrid_engine.sites import SiteRule, rules_for

MODULE = Path(__file__).resolve().parents[2] / "extension" / "lib" / "sites.js"
RULES = [("*.bank.example", "never"), ("mail.example", "local_only"), ("10.0.0.0/8", "never"),
         ("fc00::/7", "never"), ("*.bücher.example", "never"), ("shop.example", "strip_query"),
         ("*.shop.example", "local_only"), ("192.168.0.0/16", "local_only")]
URLS = ["https://bank.example/", "https://online.bank.example/login", "https://ONLINE.Bank.Example/",
        "https://online.bank.example./", "https://online.bank.example:8443/x?y#z", "https://user:pw@bank.example/",
        "http://10.1.2.3/admin", "http://[::ffff:10.0.0.1]/", "http://[fd12:3456::1]/", "http://[fe80::1]/",
        "https://www.bücher.example/", "https://www.xn--bcher-kva.example/", "https://notbank.example/",
        "https://bank.example.evil.test/", "https://example.org/?u=bank.example", "http://11.0.0.1/",
        "file:///home/me/bank.example.html", "about:blank", "https://mail.example/", "https://eu.mail.example/",
        "https://shop.example/?q=1", "https://a.shop.example/", "http://192.168.1.1:8080/", "http://0x0a.1/"]


# Written the way a browser still reads as a page of a ruled site.
TRICKS = ["https://online.bank.example\\@evil.test/", "https:online.bank.example/x", "https:/\\bank.example/",
          "https://bank%2Eexample/", "https://bank.example\u3002/", "https://ＢＡＮＫ.example/", "http://167772161/",
          "http://0012.0.0.1/", "blob:https://bank.example/0f0e", "view-source:https://bank.example/",
          " https://bank.example/\n", "https://ba\tnk.example/", "https://evil.test\\@bank.example/"]


def js_rules(urls):
    script = (f"const m = await import({json.dumps(MODULE.as_uri())});\n"
              f"const sites = {json.dumps([{'match': m, 'rule': r} for m, r in RULES])};\n"
              f"const urls = {json.dumps(urls)};\n"
              "console.log(JSON.stringify(urls.map((u) => [...m.rulesFor(u, sites)].sort())));")
    out = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return dict(zip(urls, json.loads(out.stdout)))


def test_urls_written_to_dodge_a_rule_get_the_same_rules_in_the_extension_and_the_host():
    js = js_rules(TRICKS)
    rules = [SiteRule(m, r) for m, r in RULES]
    py = {u: sorted(rules_for(u, rules)) for u in TRICKS}
    assert js == py
    assert all(py[u] == ["never"] for u in TRICKS[:-1]) and py[TRICKS[-1]] == []


def test_the_extension_and_the_host_give_every_url_the_same_rules():
    js = js_rules(URLS)
    rules = [SiteRule(m, r) for m, r in RULES]
    py = {u: sorted(rules_for(u, rules)) for u in URLS}
    assert js == py
    assert py["https://online.bank.example:8443/x?y#z"] == ["never"] and py["https://a.shop.example/"] == ["local_only"]
