"""Images for vision models through the real SDKs (openai, google-genai) against the loopback
fake: the request carries the image, and its tokens are in the estimate and the recorded cost."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from hybrid_engine.adapters import load_action
from hybrid_engine.adapters.base import StepContext
from hybrid_engine.errors import PermanentStepError
from image_writer import png

IMAGE = png(1024, 1024)
B64 = base64.b64encode(IMAGE).decode()


def run(action: str, params: dict):
    ctx = StepContext(run_id="run-1", step_id="step-1", action=action, attempt=1, log=lambda line: None)
    return asyncio.run(load_action(action).run(params, ctx))


def test_openai_request_carries_the_image_as_a_data_url(fake_provider_env):
    run("openai_chat", {"model": "gpt-4o", "prompt": "Describe it", "image": B64})
    [request] = fake_provider_env.requests
    text, image = request.body["messages"][-1]["content"]
    assert text == {"type": "text", "text": "Describe it"}
    assert image == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{B64}", "detail": "high"}}


def test_gemini_request_carries_the_image_as_inline_data(fake_provider_env):
    run("gemini_chat", {"model": "gemini-2.5-flash", "prompt": "Describe it",
                        "image": f"data:image/png;base64,{B64}"})
    [request] = fake_provider_env.requests
    parts = request.body["contents"][0]["parts"]
    assert parts[0] == {"text": "Describe it"}
    inline = parts[1]["inlineData"]
    # google-genai writes the field in snake case; the API takes either spelling
    assert inline["data"] == B64 and (inline.get("mimeType") or inline.get("mime_type")) == "image/png"


def test_the_estimate_adds_the_images_tokens_to_the_prompt(fake_provider_env):
    chat = load_action("openai_chat")
    with_image = chat.estimate({"model": "gpt-4o", "prompt": "Describe it", "image": B64, "max_tokens": 100})
    without = chat.estimate({"model": "gpt-4o", "prompt": "Describe it", "max_tokens": 100})
    assert with_image["image_tokens"] == 765
    assert with_image["prompt_tokens"] == without["prompt_tokens"] + 765
    assert with_image["cost_max"] > without["cost_max"]


def test_a_reply_without_usage_is_priced_with_the_images_tokens(fake_provider_env):
    fake_provider_env.script("gemini", usage=None)
    result = run("gemini_chat", {"model": "gemini-2.5-flash", "prompt": "Describe it", "image": B64})
    assert result.metadata["usage_source"] == "estimated"
    assert result.metadata["prompt_tokens"] >= 4 * 258
    assert result.metadata["cost"] > 0


def test_deepseek_refuses_an_image_before_sending(fake_provider_env):
    with pytest.raises(PermanentStepError) as info:
        run("deepseek_chat", {"model": "deepseek-chat", "prompt": "Describe it", "image": B64})
    assert info.value.code == "bad_params" and "no images" in info.value.message
    assert fake_provider_env.requests == []


def test_a_step_image_that_is_not_an_image_fails_with_bad_image(fake_provider_env):
    with pytest.raises(PermanentStepError) as info:
        run("openai_chat", {"model": "gpt-4o", "prompt": "Describe it",
                            "image": base64.b64encode(b"<html>not an image</html>").decode()})
    assert info.value.code == "bad_image"
    assert fake_provider_env.requests == []


@pytest.fixture
def home(he_home):
    from hybrid_engine.templates import seed_templates

    seed_templates(he_home / "templates")
    return he_home


def test_image_describe_sends_an_input_image_and_records_its_cost(cli, home, fake_provider, tmp_path):
    photo = tmp_path / "photo.png"
    photo.write_bytes(IMAGE)
    cli.env.update(fake_provider.env())
    fake_provider.script("openai", usage={"prompt_tokens": 25_560, "completion_tokens": 80})
    estimate = cli.json("estimate", "image-describe", "--input", photo, "--json")
    proc = cli("run", "image-describe", "--input", photo, "--wait", "--json")
    assert proc.returncode == 0, proc.stderr
    [request] = fake_provider.requests_for("openai")
    assert request.body["messages"][-1]["content"][1]["image_url"]["url"] == f"data:image/png;base64,{B64}"
    run_id = cli.json("runs", "--json")["runs"][0]["id"]
    step = next(s for s in cli.json("export", run_id)["steps"] if s["id"] == "describe")
    [model_step] = [s for s in estimate["steps"] if s["step_id"] == "describe"]
    assert model_step["prompt_tokens"] >= 2833 + 4 * 5667  # gpt-4o-mini's tiles for 1024 x 1024
    assert model_step["cost_min"] <= step["execution_metrics"]["cost"] <= model_step["cost_max"]


def test_an_upload_that_is_not_an_image_is_refused_when_it_comes_in(cli, home, tmp_path):
    fake = tmp_path / "photo.png"
    fake.write_bytes(b"<html>not a picture</html>")
    proc = cli("run", "image-describe", "--input", fake)
    assert proc.returncode == 2 and "content:" in proc.stderr and "PNG" in proc.stderr


def test_an_image_sent_to_a_text_workflow_fails_its_extract_step_and_sends_nothing(cli, home, fake_provider, tmp_path):
    photo = tmp_path / "photo.png"
    photo.write_bytes(IMAGE)
    cli.env.update(fake_provider.env())
    proc = cli("run", "page-digest", "--input", photo, "--wait", "--json")
    assert proc.returncode == 1
    run_id = cli.json("runs", "--json")["runs"][0]["id"]
    text = next(s for s in cli.json("export", run_id)["steps"] if s["id"] == "text")
    assert text["status"] == "FAILED" and text["error_code"] == "image_not_text"
    assert "vision model" in text["error"]
    assert fake_provider.requests_for("openai") == []


def test_an_image_captured_from_a_data_url_keeps_only_its_type_as_its_address(service):
    from hybrid_engine.templates import validate

    run_id = service.create_run(validate({"name": "img", "steps": [
        {"id": "page", "action": "capture"},
        {"id": "say", "action": "template", "dependencies": ["page"],
         "params": {"template": "{{ steps.page.outputs.image_url }}"}}]}, "img.yaml"))
    service.ingest(run_id, {"content": B64, "content_type": "image/png", "source_url": "https://pics.example/",
                            "metadata": {"kind": "image", "image_url": f"data:image/png;base64,{B64}"}})
    doc = service.run_document(run_id, cut=None)
    page = next(s for s in doc["steps"] if s["id"] == "page")
    assert page["outputs"]["content"] == B64  # the bytes, once
    assert page["outputs"]["image_url"] == "data:image/png;base64,…"
    assert B64 not in json.dumps(page["metadata"])


def _raw_pdf_run(service, pages: int, **params) -> dict:
    """A PDF capture put straight into a prompt (no extract_text): the run's model step."""
    from hybrid_engine.templates import validate

    from pdf_writer import text_pdf

    run_id = service.create_run(validate({"name": "raw", "steps": [
        {"id": "page", "action": "capture"},
        {"id": "sum", "action": "openai_chat", "dependencies": ["page"],
         "params": {"model": "gpt-4o-mini", "prompt": "Summarise: {{ steps.page.outputs.content }}",
                    "max_tokens": 50, **params}}]}, "raw.yaml"))
    pdf = text_pdf([[f"Line {i} of page {p} of the report" for i in range(40)] for p in range(pages)])
    service.ingest(run_id, {"content": base64.b64encode(pdf).decode(), "content_type": "application/pdf"})
    asyncio.run(asyncio.wait_for(service.make_executor().run(until_idle=True), 120))
    return next(s for s in service.run_document(run_id)["steps"] if s["id"] == "sum")


def test_a_pdf_put_whole_into_a_prompt_fails_before_sending_and_says_to_extract_its_text(
        service, fake_provider_env):
    step = _raw_pdf_run(service, 5)
    assert step["status"] == "FAILED" and step["error_code"] == "binary_in_prompt"
    assert "extract_text" in step["error"]
    assert fake_provider_env.requests == []


def test_a_pdf_put_whole_into_a_prompt_too_long_for_its_model_is_not_mapped_in_parts(
        service, fake_provider_env, write_config):
    write_config('[models."gpt-4o-mini"]\ncontext_window = 2000\n')
    step = _raw_pdf_run(service, 20, on_overflow="map_reduce")
    assert step["status"] == "FAILED" and step["error_code"] == "binary_in_prompt"
    assert fake_provider_env.requests == []
