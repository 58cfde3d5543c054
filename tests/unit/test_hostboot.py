"""hostboot answers the browser's first hello alone: it must say what host.py would say."""

from __future__ import annotations

import io
import subprocess
import sys

from hybrid_engine import hostboot
from hybrid_engine.identity import CHROME_EXTENSION_ID, FIREFOX_EXTENSION_ID


def test_every_handler_the_host_defines_serves_a_type_hello_lists():
    # handlers.py and batch_handlers.py build their tables from hello.MESSAGE_TYPES; a handler
    # left out of that list would never be reached, and a browser would not know the type exists.
    from hybrid_engine import batch_handlers, handlers, host

    defined = {name for module in (handlers, batch_handlers) for name, value in vars(module).items()
               if name.startswith("h_") and callable(value)}
    assert defined == {"h_" + t.replace(".", "_") for t in hostboot.MESSAGE_TYPES}
    assert list(hostboot.MESSAGE_TYPES) == sorted(hostboot.MESSAGE_TYPES) == sorted(host.HANDLERS)


def test_boots_hello_reply_is_the_hosts_hello_reply():
    from hybrid_engine.handlers import h_hello

    boot = hostboot.hello_reply({"id": 7, "type": "hello", "protocol": 1})
    assert boot["id"] == 7 and boot["ok"] is True
    assert boot["result"] == h_hello(None, {"protocol": 1})


def test_boot_leaves_anything_but_a_plain_hello_to_the_host():
    for msg in ({"id": 1, "type": "runs.list"}, {"id": 1.5, "type": "hello"}, {"type": "hello"},
                {"id": True, "type": "hello"}, {"id": 1, "type": "hello", "protocol": 0},
                {"id": 1, "type": "hello", "protocol": "1"}):
        assert hostboot.hello_reply(msg) is None, msg


def test_only_the_pinned_callers_are_answered_by_boot():
    assert hostboot.pinned_caller([f"chrome-extension://{CHROME_EXTENSION_ID}/"])
    assert hostboot.pinned_caller([f"chrome-extension://{CHROME_EXTENSION_ID}/", "--parent-window=0"])
    assert hostboot.pinned_caller(["/x/hybrid_engine.json", FIREFOX_EXTENSION_ID])
    assert hostboot.pinned_caller([])
    assert not hostboot.pinned_caller(["chrome-extension://" + "b" * 32 + "/"])
    assert not hostboot.pinned_caller(["/x/hybrid_engine.json", "someone@example.org"])
    assert not hostboot.pinned_caller([f"chrome-extension://{CHROME_EXTENSION_ID}/x", FIREFOX_EXTENSION_ID])


def test_bytes_read_by_boot_are_put_back_in_front_of_stdin():
    stream = hostboot.Prepended(b"abc", io.BytesIO(b"defg"))
    assert stream.read(2) == b"ab"
    assert stream.read(4) == b"c"  # a short read at the seam, as a pipe gives
    assert stream.read(10) == b"defg"
    assert stream.read(1) == b""


def test_boot_imports_nothing_of_the_host_before_replying():
    code = ("import sys; before = set(sys.modules); import hybrid_engine.hostboot; "
            "print(sorted(set(sys.modules) - before))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    new = set(eval(out))
    assert new <= {"__future__", "hybrid_engine", "hybrid_engine.hello", "hybrid_engine.hostboot",
                   "hybrid_engine.identity", "struct", "_struct"}, new
