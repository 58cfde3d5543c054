"""Framing on io.BytesIO with byte literals: one behaviour per test."""

from __future__ import annotations

import io
import json
import struct
import sys
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybrid_engine import protocol
from hybrid_engine.protocol import (
    MAX_INCOMING,
    MAX_OUTGOING,
    FrameTooLarge,
    FrameWriter,
    InvalidJson,
    InvalidUtf8,
    MessageError,
    NotAnObject,
    ProtocolError,
    Reassembler,
    StreamError,
    TruncatedFrame,
)


def native(n: int) -> bytes:
    return n.to_bytes(4, sys.byteorder)


def test_round_trip_of_one_message():
    buf = io.BytesIO()
    protocol.write_message(buf, {"id": 1, "type": "hello", "protocol": 1})
    buf.seek(0)
    assert protocol.read_message(buf) == {"id": 1, "type": "hello", "protocol": 1}
    assert protocol.read_message(buf) is None


def test_frame_is_native_endian_length_then_compact_utf8_json():
    frames = protocol.encode_message({"a": "é"})
    body = '{"a":"é"}'.encode("utf-8")
    assert frames == [native(len(body)) + body]
    assert native(len(body)) == struct.pack("=I", len(body))


def test_length_counts_bytes_not_characters():
    (frame,) = protocol.encode_message({"k": "日本"})
    assert struct.unpack("=I", frame[:4])[0] == len('{"k":"日本"}'.encode("utf-8")) == 14


def test_reads_native_endian_header_from_byte_literal():
    body = b'{"id":7}'
    assert protocol.read_message(io.BytesIO(native(8) + body)) == {"id": 7}


def test_zero_bytes_at_frame_boundary_is_clean_eof():
    assert protocol.read_frame(io.BytesIO(b"")) is None
    assert protocol.read_message(io.BytesIO(b"")) is None


def test_eof_after_a_whole_frame_is_clean():
    stream = io.BytesIO(native(2) + b"{}")
    assert protocol.read_message(stream) == {}
    assert protocol.read_message(stream) is None


def test_truncated_header_is_a_stream_error():
    with pytest.raises(TruncatedFrame) as info:
        protocol.read_frame(io.BytesIO(b"\x05\x00"))
    assert info.value.must_close and info.value.code == "bad_frame"


def test_truncated_body_is_a_stream_error():
    with pytest.raises(TruncatedFrame) as info:
        protocol.read_frame(io.BytesIO(native(10) + b'{"id"'))
    assert isinstance(info.value, StreamError) and info.value.must_close


def test_header_without_body_is_truncated():
    with pytest.raises(TruncatedFrame):
        protocol.read_frame(io.BytesIO(native(3)))


class CountingStream(io.BytesIO):
    """Records the largest read requested, to prove nothing big is allocated."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.largest = 0

    def read(self, size=-1):
        self.largest = max(self.largest, size)
        return super().read(size)


def test_oversized_declared_length_is_rejected_before_reading_the_body():
    stream = CountingStream(native(MAX_INCOMING + 1) + b"x" * 16)
    with pytest.raises(FrameTooLarge) as info:
        protocol.read_frame(stream)
    assert info.value.code == "bad_frame" and info.value.must_close
    assert stream.largest == 4  # only the header was asked for
    assert stream.tell() == 4


def test_max_declared_length_of_4_gib_is_rejected_without_allocating():
    stream = CountingStream(b"\xff\xff\xff\xff")
    with pytest.raises(FrameTooLarge):
        protocol.read_frame(stream)
    assert stream.largest == 4


def test_exactly_the_limit_is_accepted():
    body = b'{"a":"' + b"x" * 20 + b'"}'
    assert protocol.read_frame(io.BytesIO(native(len(body)) + body), max_size=len(body)) == body


def test_invalid_utf8_is_bad_frame_and_stream_stays_in_sync():
    stream = io.BytesIO(native(4) + b"\xff\xfe{}" + native(2) + b"{}")
    with pytest.raises(InvalidUtf8) as info:
        protocol.read_message(stream)
    assert info.value.code == "bad_frame" and not info.value.must_close
    assert protocol.read_message(stream) == {}


def test_invalid_json_is_bad_json_and_stream_stays_in_sync():
    stream = io.BytesIO(native(5) + b"{nope" + native(2) + b"{}")
    with pytest.raises(InvalidJson) as info:
        protocol.read_message(stream)
    assert info.value.code == "bad_json" and isinstance(info.value, MessageError)
    assert protocol.read_message(stream) == {}


@pytest.mark.parametrize("body", [b"[1,2]", b'"text"', b"42", b"null", b"true"])
def test_json_that_is_not_an_object_is_bad_request(body):
    with pytest.raises(NotAnObject) as info:
        protocol.read_message(io.BytesIO(native(len(body)) + body))
    assert info.value.code == "bad_request" and not info.value.must_close


def test_empty_body_is_bad_json():
    with pytest.raises(InvalidJson):
        protocol.read_message(io.BytesIO(native(0)))


def test_nan_is_not_json():
    body = b'{"x":NaN}'
    with pytest.raises(InvalidJson):
        protocol.read_message(io.BytesIO(native(len(body)) + body))


def test_deeply_nested_json_is_bad_json_not_a_crash():
    body = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(InvalidJson):
        protocol.decode_message(body)


def test_utf8_bom_in_body_is_bad_json():
    body = b'\xef\xbb\xbf{"id":1}'
    with pytest.raises(InvalidJson):
        protocol.decode_message(body)


class TricklingStream(io.RawIOBase):
    """A pipe that hands out at most 3 bytes per read."""

    def __init__(self, data: bytes):
        self._data = io.BytesIO(data)

    def readable(self):
        return True

    def read(self, size=-1):
        return self._data.read(min(3, size if size >= 0 else 3))


def test_short_reads_are_reassembled():
    body = json.dumps({"id": "x", "text": "y" * 100}).encode()
    stream = TricklingStream(native(len(body)) + body)
    assert protocol.read_message(stream) == {"id": "x", "text": "y" * 100}
    assert protocol.read_message(stream) is None


def test_small_reply_is_a_single_frame():
    assert len(protocol.encode_message({"id": 1, "ok": True, "result": {}})) == 1


def test_five_mb_reply_with_multibyte_text_is_chunked_within_1_mib_and_reassembles_exactly():
    text = "ünïcødé 日本語テキスト 😀 \"quoted\" back\\slash\n" * 110_000
    reply = {"id": "r-5mb", "ok": True, "result": {"outputs": {"text": text}}}
    assert len(protocol.dumps(reply).encode("utf-8")) > 5 * 1024 * 1024
    buf = io.BytesIO()
    count = protocol.write_message(buf, reply)
    assert count > 5
    buf.seek(0)
    bodies = []
    while (body := protocol.read_frame(buf)) is not None:
        assert len(body) <= MAX_OUTGOING
        bodies.append(body)
    assert len(bodies) == count
    chunks = [json.loads(b) for b in bodies]
    assert [c["chunk"] for c in chunks] == list(range(count))
    assert {c["chunks"] for c in chunks} == {count} and {c["id"] for c in chunks} == {"r-5mb"}
    joined = "".join(c["data"] for c in chunks)
    assert joined.encode("utf-8") == protocol.dumps(reply).encode("utf-8")  # byte for byte
    assert json.loads(joined) == reply


def test_chunk_frames_use_the_space_up_to_the_limit():
    reply = {"id": 1, "ok": True, "result": {"t": "a" * (3 * MAX_OUTGOING)}}
    frames = protocol.encode_message(reply)
    assert len(frames) == 4
    assert all(len(f) - 4 == MAX_OUTGOING for f in frames[:-1])


def test_chunking_accounts_for_escapes_that_grow_in_each_slice():
    text = '"\\' * 700_000  # every character escapes to two bytes inside a chunk's data
    reply = {"id": 2, "ok": True, "result": {"t": text}}
    bodies = protocol.encode_bodies(reply)
    assert all(len(b) <= MAX_OUTGOING for b in bodies)
    assert json.loads("".join(json.loads(b)["data"] for b in bodies)) == reply


def test_lone_surrogate_reply_falls_back_to_ascii_escapes():
    reply = {"id": 3, "ok": True, "result": {"t": "\ud800" + "x" * (2 * MAX_OUTGOING)}}
    bodies = protocol.encode_bodies(reply)
    assert len(bodies) > 1 and all(len(b) <= MAX_OUTGOING for b in bodies)
    assert json.loads("".join(json.loads(b)["data"] for b in bodies)) == reply


def test_unencodable_message_writes_nothing():
    buf = io.BytesIO()
    with pytest.raises(ValueError):
        FrameWriter(buf).send({"id": 1, "x": float("nan")})
    assert buf.getvalue() == b""


def test_reassembler_returns_whole_messages_from_chunks():
    reply = {"id": 9, "ok": True, "result": {"t": "é" * MAX_OUTGOING}}
    assembler = Reassembler()
    results = [assembler.feed(json.loads(b)) for b in protocol.encode_bodies(reply)]
    assert results[:-1] == [None] * (len(results) - 1)
    assert results[-1] == reply and assembler.pending == 0


def test_reassembler_passes_plain_messages_through():
    assert Reassembler().feed({"event": "run.updated", "run": {}}) == {"event": "run.updated", "run": {}}


def test_reassembler_rejects_out_of_order_chunks():
    with pytest.raises(protocol.ChunkError):
        Reassembler().feed({"id": 1, "chunk": 1, "chunks": 2, "data": "x"})


def test_iter_messages_yields_whole_messages_in_order():
    buf = io.BytesIO()
    protocol.write_message(buf, {"id": 1, "ok": True, "result": {"t": "z" * (2 * MAX_OUTGOING)}})
    protocol.write_message(buf, {"event": "run.updated"})
    buf.seek(0)
    got = list(protocol.iter_messages(buf))
    assert [m.get("id") for m in got] == [1, None] and len(got[0]["result"]["t"]) == 2 * MAX_OUTGOING


def test_writer_never_interleaves_frames_of_concurrent_messages():
    buf = io.BytesIO()
    writer = FrameWriter(buf)
    big = {"id": "big", "ok": True, "result": {"t": "b" * (3 * MAX_OUTGOING)}}

    def send_small():
        for i in range(50):
            writer.send({"id": i, "ok": True, "result": {}})

    thread = threading.Thread(target=send_small)
    thread.start()
    writer.send(big)
    thread.join()
    buf.seek(0)
    bodies = []
    while (body := protocol.read_frame(buf)) is not None:
        bodies.append(json.loads(body))
    chunk_positions = [i for i, m in enumerate(bodies) if "chunk" in m]
    assert chunk_positions == list(range(chunk_positions[0], chunk_positions[0] + len(chunk_positions)))
    assert len(bodies) == 50 + len(chunk_positions)


def test_writer_flushes_every_message():
    class Recorder(io.BytesIO):
        flushes = 0

        def flush(self):
            Recorder.flushes += 1

    stream = Recorder()
    FrameWriter(stream).send({"id": 1})
    assert Recorder.flushes == 1 and stream.getvalue()[4:] == b'{"id":1}'


def test_errors_carry_codes_for_error_replies():
    err = InvalidJson("frame body is not JSON")
    assert err.to_dict() == {"code": "bad_json", "message": "frame body is not JSON"}


def _frames(draw_bodies):
    return b"".join(native(len(b)) + b for b in draw_bodies)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=10,
)
bodies = st.one_of(
    st.binary(max_size=40),
    json_values.map(lambda v: json.dumps(v).encode("utf-8")),
)
streams = st.one_of(
    st.binary(max_size=300),
    st.lists(bodies, max_size=6).map(_frames),
    st.tuples(st.lists(bodies, max_size=4).map(_frames), st.binary(max_size=12)).map(lambda t: t[0] + t[1]),
)


@settings(max_examples=400, deadline=None)
@given(streams)
def test_random_byte_streams_raise_only_protocol_errors(data):
    stream = io.BytesIO(data)
    for _ in range(1000):
        try:
            message = protocol.read_message(stream)
        except MessageError:
            continue  # answered; the stream is still in sync
        except StreamError:
            break  # closed
        except ProtocolError as exc:  # pragma: no cover - every error is one of the two kinds
            pytest.fail(f"unclassified protocol error {exc!r}")
        if message is None:
            break
        assert isinstance(message, dict)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.text(max_size=8).filter(lambda k: k not in {"id", "chunk", "chunks", "data"}),
                    json_values, max_size=6),
    st.integers(min_value=64, max_value=400),
)
def test_any_message_survives_chunking_with_small_frames(message, max_frame):
    message = {"id": "p", **message}
    bodies = protocol.encode_bodies(message, max_frame=max_frame)
    assert all(len(b) <= max_frame for b in bodies)
    assembler = Reassembler()
    results = [assembler.feed(json.loads(b)) for b in bodies]
    assert results[-1] == message
