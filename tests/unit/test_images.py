"""Images for vision models: type and size read from the bytes, and image tokens by each
provider's documented rule (the figures in OpenAI's and Google's pricing examples)."""

from __future__ import annotations

import base64
import math

import pytest

from hybrid_engine.images import MAX_IMAGE_BYTES, ImageError, image_tokens, read_image
from image_writer import png


def test_a_png_is_read_with_its_size_from_base64_or_a_data_url():
    data = png(300, 200)
    plain = read_image(base64.b64encode(data).decode())
    url = read_image("data:image/png;base64," + base64.b64encode(data).decode())
    assert (plain.media_type, plain.width, plain.height) == ("image/png", 300, 200)
    assert url == plain and plain.data_url.startswith("data:image/png;base64,iVBORw0KGgo")


def test_a_jpeg_header_gives_its_size():
    sof = b"\xff\xc0\x00\x11\x08\x01\x2c\x02\x58\x03" + b"\x00" * 9  # 600 x 300
    data = b"\xff\xd8" + b"\xff\xe0\x00\x10" + b"JFIF\x00" + b"\x00" * 9 + sof + b"\xff\xd9"
    image = read_image(base64.b64encode(data).decode())
    assert (image.media_type, image.width, image.height) == ("image/jpeg", 600, 300)


def test_text_that_is_not_an_image_is_refused_naming_the_field():
    with pytest.raises(ImageError) as info:
        read_image(base64.b64encode(b"hello, not an image").decode())
    assert info.value.code == "bad_image" and "params.image" in info.value.message


def test_an_image_over_the_provider_limit_is_refused_before_decoding():
    with pytest.raises(ImageError) as info:
        read_image("A" * (MAX_IMAGE_BYTES // 3 * 4 + 100))
    assert info.value.code == "image_too_large"


@pytest.mark.parametrize("model,size,detail,tokens", [
    ("gpt-4o", (1024, 1024), "high", 765),     # OpenAI's example: 4 tiles
    ("gpt-4o", (2048, 4096), "high", 1105),    # scaled to 768 x 1536: 6 tiles
    ("gpt-4o", (4096, 8192), "low", 85),
    ("gpt-4o-mini", (1024, 1024), "high", 2833 + 4 * 5667),
    ("gpt-4.1-mini", (1024, 1024), "high", 1659),    # 1024 patches x 1.62
    ("gpt-4.1-mini", (1800, 2400), "high", 2353),    # OpenAI's example: 1452 patches x 1.62
])
def test_openai_image_tokens_follow_the_documented_formulas(model, size, detail, tokens):
    assert image_tokens(model, "openai", *size, detail) == (tokens, True)


def test_gemini_counts_258_per_small_image_and_per_768_tile():
    assert image_tokens("gemini-2.5-flash", "gemini", 384, 384) == (258, True)
    assert image_tokens("gemini-2.5-flash", "gemini", 1000, 1000) == (4 * 258, True)


def test_an_unknown_model_is_counted_with_gpt_4o_tiles_and_says_it_is_estimated():
    assert image_tokens("llava:13b", "local", 1024, 1024) == (765, False)


def test_an_image_address_instead_of_its_bytes_says_the_browser_could_not_fetch_it():
    with pytest.raises(ImageError) as info:
        read_image("https://cdn.example.org/cat.png")
    assert "address, not its bytes" in info.value.message


@pytest.mark.parametrize("size", [(1, 100_000), (100_000, 1), (20, 60_000)])
def test_an_image_thinner_than_a_patch_still_costs_its_patches(size):
    """Scaled to fit 1,536 patches, a strip narrower than one patch had rounded to none: free."""
    tokens, documented = image_tokens("gpt-4.1-mini", "openai", *size)
    assert tokens == math.ceil(1536 * 1.62) and documented
