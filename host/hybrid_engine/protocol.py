"""Native-messaging framing: bytes in, messages out, and back.

A frame is a 4-byte unsigned length in the machine's NATIVE byte order (struct "=I")
followed by that many bytes of UTF-8 JSON. Browser-to-host frames may be up to 64 MiB
(checked before anything is allocated); host-to-browser frames never exceed 1 MiB
(Chrome's limit), so a larger reply is sent as consecutive chunk frames::

    {"id": <reply id>, "chunk": i, "chunks": n, "data": "<slice of the reply's JSON text>"}

``chunk`` counts from 0 to n-1. Concatenating ``data`` in order gives the reply's JSON
text exactly; ``JSON.parse`` of it gives the reply. Slices are cut between code points
(never inside a UTF-16 surrogate pair), and each chunk frame, envelope included, is
at most 1 MiB.

Errors (all carry the wire ``code`` the host puts in its error reply)::

    HybridEngineError
     +-- ProtocolError                       code; must_close tells the caller what to do
          +-- MessageError   must_close=False  the frame was read whole and the stream is
          |    |                                still in sync: reply with the error, keep serving
          |    +-- InvalidUtf8    bad_frame     body is not UTF-8
          |    +-- InvalidJson    bad_json      body is not JSON
          |    +-- NotAnObject    bad_request   JSON, but not an object
          |    +-- ChunkError     bad_frame     (clients) a chunk frame that does not fit its series
          +-- StreamError    must_close=True   the stream cannot be resynchronised: stop
               |                                reading and close it (an error reply may still
               |                                be written first; stdout is separate)
               +-- FrameTooLarge  bad_frame     declared length over the limit; nothing allocated
               +-- TruncatedFrame bad_frame     EOF inside a header or a body

End of input exactly at a frame boundary (0 bytes) is not an error: the readers
return None. Streams are any blocking binary file objects (``sys.stdin.buffer``,
``io.BytesIO``, a pipe); short reads are handled.
"""

from __future__ import annotations

import json
import struct
import threading

from . import MAX_INCOMING, MAX_OUTGOING  # noqa: F401 - re-exported: the limits of the framing
from .errors import HybridEngineError, TooLarge

TYPE_CHECKING = False  # `typing` is not imported before the host's first reply
if TYPE_CHECKING:
    from typing import Any, BinaryIO, Iterator

HEADER = struct.Struct("=I")  # native byte order, standard size: 4 bytes
_READ_STEP = 1024 * 1024  # grow the body buffer as bytes arrive, not by the declared size


# ---- errors -----------------------------------------------------------------

class ProtocolError(HybridEngineError):
    """A frame could not be turned into a message. See ``must_close``."""

    code = "bad_frame"
    must_close = True


class MessageError(ProtocolError):
    """The frame was consumed whole: answer with an error reply and keep serving."""

    must_close = False


class InvalidUtf8(MessageError):
    code = "bad_frame"


class InvalidJson(MessageError):
    code = "bad_json"


class NotAnObject(MessageError):
    code = "bad_request"


class ChunkError(MessageError):
    code = "bad_frame"


class StreamError(ProtocolError):
    """The stream is out of sync: the caller must stop reading and close it."""

    must_close = True


class FrameTooLarge(StreamError):
    code = "bad_frame"


class TruncatedFrame(StreamError):
    code = "bad_frame"


# ---- reading ----------------------------------------------------------------

def _read_exact(stream: BinaryIO, size: int, what: str) -> bytes | None:
    """Read exactly ``size`` bytes; None if the stream ended before the first byte."""
    buf = bytearray()
    while len(buf) < size:
        chunk = stream.read(min(size - len(buf), _READ_STEP))
        if not chunk:
            if not buf:
                return None
            raise TruncatedFrame(f"stream ended inside a frame {what}: got {len(buf)} of {size} bytes")
        buf += chunk
    return bytes(buf)


def read_frame(stream: BinaryIO, max_size: int = MAX_INCOMING) -> bytes | None:
    """Read one frame's body. None on a clean end of input (0 bytes at a frame boundary).

    Raises FrameTooLarge (declared length > max_size; nothing is read or allocated
    past the header) or TruncatedFrame. Both are StreamErrors: after them the stream
    is out of sync and the caller must close it.
    """
    header = _read_exact(stream, HEADER.size, "header")
    if header is None:
        return None
    (length,) = HEADER.unpack(header)
    if length > max_size:
        raise FrameTooLarge(f"frame declares {length} bytes; the limit is {max_size}", limit=max_size)
    if length == 0:
        return b""
    body = _read_exact(stream, length, "body")
    if body is None:
        raise TruncatedFrame(f"stream ended after a header declaring {length} bytes")
    return body


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def decode_message(body: bytes) -> dict:
    """UTF-8 JSON object from a frame body; MessageError subclasses otherwise."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidUtf8(f"frame body is not UTF-8 (byte {exc.start})") from exc
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise InvalidJson("frame body is JSON nested too deeply") from exc
    except ValueError as exc:
        raise InvalidJson(f"frame body is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise NotAnObject(f"a message must be a JSON object, not {type(value).__name__}")
    return value


def read_message(stream: BinaryIO, max_size: int = MAX_INCOMING) -> dict | None:
    """Read and decode one message; None on a clean end of input.

    A MessageError leaves the stream at the next frame: reply and call again.
    A StreamError means: close.
    """
    body = read_frame(stream, max_size)
    if body is None:
        return None
    return decode_message(body)


# ---- writing ----------------------------------------------------------------

def dumps(message: Any, *, ensure_ascii: bool = False) -> str:
    """Compact JSON text, as sent on the wire. NaN and infinities are refused."""
    return json.dumps(message, ensure_ascii=ensure_ascii, separators=(",", ":"), allow_nan=False)


def frame(body: bytes) -> bytes:
    """Header + body, without any size policy (clients may send up to 64 MiB)."""
    return HEADER.pack(len(body)) + body


def _json_text(message: Any) -> tuple[str, bytes, bool]:
    text = dumps(message)
    try:
        return text, text.encode("utf-8"), False
    except UnicodeEncodeError:  # a lone surrogate in a string: fall back to \u escapes
        text = dumps(message, ensure_ascii=True)
        return text, text.encode("ascii"), True


def _string_cost(ensure_ascii: bool):
    if ensure_ascii:
        return lambda s: len(json.dumps(s, ensure_ascii=True))
    return lambda s: len(json.dumps(s, ensure_ascii=False).encode("utf-8"))


def _split(text: str, budget: int, cost) -> list[str]:
    """Cut text into slices whose JSON string literal costs at most ``budget`` bytes.

    cost(s) is 2 (the quotes) plus a per-code-point amount, so the cost of a longer
    slice is known from a shorter one plus the difference: bisection reads each
    character about twice, not log(n) times.
    """
    slices: list[str] = []
    pos, n = 0, len(text)
    while pos < n:
        end = min(n, pos + budget - 2)  # every code point costs at least 1 byte
        if cost(text[pos:end]) > budget:
            lo, lo_cost, hi = pos, 2, end  # text[pos:lo] fits, text[pos:hi] does not
            while hi - lo > 1:
                mid = (lo + hi) // 2
                mid_cost = lo_cost + cost(text[lo:mid]) - 2
                if mid_cost <= budget:
                    lo, lo_cost = mid, mid_cost
                else:
                    hi = mid
            end = lo
        if end <= pos:  # cannot happen while budget >= 14; never loop forever
            raise TooLarge("cannot split the reply into frames")
        slices.append(text[pos:end])
        pos = end
    return slices


def _chunk_bodies(text: str, msg_id: Any, max_frame: int, ensure_ascii: bool) -> list[bytes]:
    cost = _string_cost(ensure_ascii)
    width = 1
    while True:
        widest = 10**width - 1
        probe = dumps({"id": msg_id, "chunk": widest, "chunks": widest, "data": ""}, ensure_ascii=ensure_ascii)
        budget = max_frame - (len(probe.encode("utf-8")) - 2)  # bytes left for the data literal
        if budget < 16:  # a single code point may cost 12 bytes escaped, plus quotes
            raise TooLarge(f"reply id too large to chunk into {max_frame}-byte frames")
        slices = _split(text, budget, cost)
        if len(str(len(slices))) <= width:
            break
        width = len(str(len(slices)))
    count = len(slices)
    bodies = []
    for index, piece in enumerate(slices):
        env = dumps({"id": msg_id, "chunk": index, "chunks": count, "data": piece}, ensure_ascii=ensure_ascii)
        body = env.encode("utf-8")
        if len(body) > max_frame:  # defensive: the arithmetic above guarantees otherwise
            raise TooLarge(f"chunk {index} is {len(body)} bytes, over {max_frame}")
        bodies.append(body)
    return bodies


def encode_bodies(message: dict, max_frame: int = MAX_OUTGOING) -> list[bytes]:
    """The frame bodies (JSON bytes) for one message: one, or a chunk series."""
    text, body, ensure_ascii = _json_text(message)
    if len(body) <= max_frame:
        return [body]
    msg_id = message.get("id") if isinstance(message, dict) else None
    return _chunk_bodies(text, msg_id, max_frame, ensure_ascii)


def encode_message(message: dict, max_frame: int = MAX_OUTGOING) -> list[bytes]:
    """Whole frames (header + body) for one message, chunked past ``max_frame``.

    Raises TypeError/ValueError for a message JSON cannot encode (before any byte is
    produced), TooLarge if it cannot be chunked.
    """
    return [frame(body) for body in encode_bodies(message, max_frame)]


def _write_all(stream: BinaryIO, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = stream.write(view)
        if written is None:  # a non-blocking raw stream that would block
            raise BlockingIOError("stream would block")
        view = view[written:]


class FrameWriter:
    """Writes whole messages to one stream from any thread.

    One lock covers all frames of a message, so the chunks of a large reply are
    never interleaved with another message; each message is flushed. Encoding
    happens before the lock is taken: a message that cannot be encoded writes
    nothing. BrokenPipeError/OSError propagate (the reader went away).
    """

    def __init__(self, stream: BinaryIO, max_frame: int = MAX_OUTGOING):
        self.stream = stream
        self.max_frame = max_frame
        self._lock = threading.Lock()

    def send(self, message: dict) -> int:
        """Write one message; returns the number of frames it took."""
        frames = encode_message(message, self.max_frame)
        with self._lock:
            for data in frames:
                _write_all(self.stream, data)
            self.stream.flush()
        return len(frames)


def write_message(stream: BinaryIO, message: dict, max_frame: int = MAX_OUTGOING) -> int:
    """Unlocked one-shot write (tests, single-threaded clients)."""
    frames = encode_message(message, max_frame)
    for data in frames:
        _write_all(stream, data)
    stream.flush()
    return len(frames)


# ---- reassembly (clients) ---------------------------------------------------

def is_chunk(message: dict) -> bool:
    return (
        isinstance(message, dict)
        and "chunk" in message
        and "chunks" in message
        and "data" in message
        and "ok" not in message
    )


class Reassembler:
    """Turns a sequence of received messages back into whole messages.

    ``feed`` returns the message when it is whole (a plain message at once, a
    chunk series on its last chunk) and None while a series is incomplete.
    Series are kept apart by id, so interleaved series reassemble too.
    """

    def __init__(self) -> None:
        self._series: dict[str, tuple[int, list[str]]] = {}

    @property
    def pending(self) -> int:
        return len(self._series)

    def feed(self, message: dict) -> dict | None:
        if not is_chunk(message):
            return message
        index, count, data = message["chunk"], message["chunks"], message["data"]
        if not (isinstance(index, int) and isinstance(count, int) and isinstance(data, str)):
            raise ChunkError("chunk, chunks and data must be int, int and string")
        key = json.dumps(message.get("id"))
        if index == 0:
            self._series[key] = (count, [])
        expected, parts = self._series.get(key, (None, None))
        if parts is None or expected != count or index != len(parts) or not 0 <= index < count:
            self._series.pop(key, None)
            raise ChunkError(f"chunk {index} of {count} for id {key} is out of order")
        parts.append(data)
        if len(parts) < count:
            return None
        del self._series[key]
        try:
            whole = json.loads("".join(parts))
        except ValueError as exc:
            raise ChunkError(f"reassembled reply for id {key} is not JSON: {exc}") from exc
        if not isinstance(whole, dict):
            raise ChunkError(f"reassembled reply for id {key} is not an object")
        return whole


def iter_messages(stream: BinaryIO, max_size: int = MAX_INCOMING) -> Iterator[dict]:
    """Whole messages from a stream (chunk series reassembled) until a clean end."""
    assembler = Reassembler()
    while True:
        message = read_message(stream, max_size)
        if message is None:
            return
        whole = assembler.feed(message)
        if whole is not None:
            yield whole


__all__ = [
    "HEADER",
    "MAX_INCOMING",
    "MAX_OUTGOING",
    "ProtocolError",
    "MessageError",
    "InvalidUtf8",
    "InvalidJson",
    "NotAnObject",
    "ChunkError",
    "StreamError",
    "FrameTooLarge",
    "TruncatedFrame",
    "read_frame",
    "decode_message",
    "read_message",
    "dumps",
    "frame",
    "encode_bodies",
    "encode_message",
    "write_message",
    "FrameWriter",
    "is_chunk",
    "Reassembler",
    "iter_messages",
]
