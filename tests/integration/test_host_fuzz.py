"""Random byte streams into a real host: it never crashes and its stdout stays frames only.

Each example starts a fresh host, writes a stream mixing well-formed frames of random
messages, frames of random bytes, bare headers with any declared length and raw
garbage, then closes stdin. The host must exit 0 on its own, write nothing but valid
frames (each at most 1 MiB, each a JSON object that is a reply, an event or a chunk),
answer with known error codes only, and never print a traceback.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybrid_engine import protocol
from hybrid_engine.host import HANDLERS

from host_client import HostClient

CODES = {"bad_frame", "bad_json", "bad_request", "bad_template", "unknown_type", "not_found", "forbidden",
         "too_large", "conflict", "budget_exceeded", "bad_config", "internal"}
FIELDS = ["protocol", "limit", "offset", "run_id", "step_id", "template", "page", "workflow_id", "content",
          "content_type", "source_url", "metadata", "step_name"]

scalars = st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.floats(allow_nan=False, allow_infinity=False) \
    | st.text(max_size=24)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
pages = st.fixed_dictionaries({}, optional={"content": json_values | st.text(max_size=200),
                                            "content_type": st.sampled_from(["text/html", "text/plain", "x/y"]) | scalars,
                                            "title": json_values, "source_url": json_values})
messages = st.builds(
    lambda msg_id, kind, fields: {**fields, "id": msg_id, "type": kind},
    st.integers(-5, 10**6) | st.text(max_size=12) | json_values,
    st.sampled_from(sorted(HANDLERS) + ["", "nope", "runs."]) | json_values,
    st.dictionaries(st.sampled_from(FIELDS), json_values | pages, max_size=4),
) | st.dictionaries(st.text(max_size=6), json_values, max_size=4)


def _frame_json(value) -> bytes:
    return protocol.frame(json.dumps(value).encode("utf-8"))


segments = st.one_of(
    messages.map(_frame_json),
    json_values.map(_frame_json),
    st.binary(max_size=48).map(protocol.frame),
    st.integers(0, 2**32 - 1).map(protocol.HEADER.pack),
    st.binary(max_size=48),
)
streams = st.lists(segments, min_size=1, max_size=8).map(b"".join)


@pytest.fixture(scope="module")
def fuzz_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("fuzz-home")
    from hybrid_engine.templates import seed_templates

    seed_templates(home / "templates")
    return home


@settings(max_examples=100, deadline=None, database=None, derandomize=False,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(stream=streams)
def test_random_byte_streams_never_crash_the_host_or_dirty_its_stdout(fuzz_home, stream):
    with HostClient(fuzz_home) as host:
        try:
            host.send_raw(stream)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the host closed a stream it could not resynchronise on: allowed
        code = host.close(timeout=10)
        assert code == 0, host.stderr()[-3000:]
        assert host.stdout_problems == [], host.stdout_problems
        err = host.stderr()
        assert "Traceback" not in err, err[-3000:]
        replies = list(host.replies.values()) + host.unmatched
        for reply in replies:
            assert isinstance(reply["ok"], bool)
            if not reply["ok"]:
                assert reply["error"]["code"] in CODES and isinstance(reply["error"]["message"], str)
                assert reply["error"]["code"] != "internal", reply
        assert max(host.frame_sizes, default=0) <= protocol.MAX_OUTGOING
