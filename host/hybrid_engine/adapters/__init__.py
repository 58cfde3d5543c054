"""The action registry: name -> ActionSpec, and lazy loading of implementations.

Importing this package imports no SDK; `load_action` imports one on first use.
"""

from __future__ import annotations

import importlib
import threading

from .base import Action, ActionSpec, Param

# What a chat step does with a prompt longer than its model's context window; map_reduce is
# done by the engine before the adapter sees the step (overflow.py).
ON_OVERFLOW = ("fail", "truncate", "map_reduce")

_CHAT_PARAMS = {
    "model": Param(str, required=True, doc="the provider's model id"),
    "prompt": Param(str, required=True, doc="the user message; references allowed"),
    "system": Param(str, doc="an optional system message"),
    "temperature": Param((int, float)),
    "max_tokens": Param(int, doc="upper bound on output tokens"),
    "on_overflow": Param(str, doc="'fail' (default), 'truncate' or 'map_reduce' when the prompt exceeds the "
                                  "context window"),
    "redact": Param(list, doc="kinds of personal data replaced before a cloud call (pii.KINDS); "
                              "set from the template's `redact:`"),
    "image": Param(str, doc="an image for a vision model: base64 or a data: URL (a captured image's content)"),
    "image_detail": Param(str, doc="OpenAI's image detail: 'high' (default) or 'low'"),
    "fallback": Param(list, kind="fallback", doc="models to try in order when this one cannot answer (fallbacks.py)"),
}
_CHAT_OUTPUTS = frozenset({"text", "finish_reason", "reasoning", "sent"})  # sent: {system, prompt} as sent


def _chat(name: str, provider: str, loader: str) -> ActionSpec:
    return ActionSpec(name=name, loader=loader, params=_CHAT_PARAMS, outputs=_CHAT_OUTPUTS,
                      provider=provider, default_retries=4, default_timeout_s=120.0)


CAPTURE_OUTPUTS = frozenset({"content", "source_url", "content_type", "captured_at", "title",
                             "selection", "link_url", "link_text", "image_url", "image_alt",
                             "kind", "size_bytes", "article"})

SPECS: dict[str, ActionSpec] = {spec.name: spec for spec in [
    ActionSpec("capture", "hybrid_engine.adapters.builtin:Capture", outputs=CAPTURE_OUTPUTS,
               input_slot=True),
    ActionSpec("extract_text", "hybrid_engine.adapters.builtin:ExtractText",
               params={"html": Param(str, required=True), "url": Param(str),
                       "include_links": Param(bool), "include_tables": Param(bool), "article": Param(str)},
               outputs=frozenset({"text", "title", "chars", "source_chars", "source", "pages",
                                  "pages_without_text"}), blocking=True,
               default_timeout_s=60.0),
    ActionSpec("split_text", "hybrid_engine.adapters.builtin:SplitText",
               params={"text": Param(str, required=True),
                       "part_tokens": Param(int, doc="the most tokens in one part (default 2000)"),
                       "overlap_tokens": Param(int, doc="tokens of whole paragraphs repeated at a seam (default 100)"),
                       "model": Param(str, doc="count with this model's tokenizer (default o200k_base)")},
               outputs=frozenset({"parts", "count"}), blocking=True, default_timeout_s=120.0),
    # The row of a step with `for_each` (fanout.py): it grows the parts, then gathers their
    # outputs. Not written in templates; the executor runs it itself.
    ActionSpec("for_each", "hybrid_engine.adapters.builtin:ForEach", inline=True),
    ActionSpec("template", "hybrid_engine.adapters.builtin:Template",
               params={"template": Param(str, required=True)}, outputs=frozenset({"text"}), inline=True),
    ActionSpec("noop", "hybrid_engine.adapters.builtin:Noop",
               params={"value": Param(object)}, outputs=frozenset({"value"}), inline=True),
    ActionSpec("sleep", "hybrid_engine.adapters.builtin:Sleep",
               params={"seconds": Param((int, float), required=True)}, outputs=frozenset({"slept"})),
    ActionSpec("fail", "hybrid_engine.adapters.builtin:Fail",
               params={"message": Param(str), "transient": Param(bool), "times": Param(int),
                       "retry_after": Param((int, float))},
               outputs=frozenset({"ok"}), inline=True),
    ActionSpec("write_file", "hybrid_engine.adapters.builtin:WriteFile",
               params={"path": Param(str, required=True, kind="path", same_name_if="append",
                                     doc="relative to the files folder; references fill in names only"),
                       "content": Param(object, required=True),
                       "append": Param(bool, doc="add to the file; a name from data is then shared, not made unique")},
               outputs=frozenset({"path", "bytes"}), blocking=True, default_timeout_s=60.0),
    ActionSpec("save_note", "hybrid_engine.adapters.notes:SaveNote",
               params={"content": Param(object, required=True, doc="the note's Markdown body"),
                       "title": Param(str, doc="default: the captured page's title; fills the file name only"),
                       "url": Param(str, doc="default: the captured page's URL"),
                       "tags": Param((list, str), doc="a list, or words separated by commas"),
                       "folder": Param(str, kind="folder", doc="absolute, ~/, or inside [notes] folder; "
                                                              "written out, never from data"),
                       "mode": Param(str, doc="'note' (one file per page, the default) or 'daily' (append to "
                                              "today's note)")},
               outputs=frozenset({"path", "bytes", "mode"}), blocking=True, default_timeout_s=60.0,
               run_facts=True),
    ActionSpec("webhook", "hybrid_engine.adapters.webhook:Webhook",
               params={"url": Param(str, kind="url", doc="written out in the template, never from data"),
                       "endpoint": Param(str, kind="url", doc="a name from [webhooks] in config.toml"),
                       "data": Param(object, doc="what to send as `outputs`; default: every step's outputs")},
               outputs=frozenset({"status", "response"}), blocking=True, default_retries=3,
               default_timeout_s=60.0, run_facts=True),
    _chat("openai_chat", "openai", "hybrid_engine.adapters.openai:OpenAIChat"),
    _chat("deepseek_chat", "deepseek", "hybrid_engine.adapters.openai:DeepSeekChat"),
    _chat("local_chat", "local", "hybrid_engine.adapters.openai:LocalChat"),
    _chat("gemini_chat", "gemini", "hybrid_engine.adapters.gemini:GeminiChat"),
]}

_loaded: dict[str, Action] = {}
_lock = threading.Lock()


def get_spec(action: str) -> ActionSpec:
    return SPECS[action]


def load_action(action: str) -> Action:
    instance = _loaded.get(action)
    if instance is not None:
        return instance
    with _lock:
        if action not in _loaded:
            spec = SPECS[action]
            module_name, attr = spec.loader.split(":")
            cls = getattr(importlib.import_module(module_name), attr)
            obj = cls()
            obj.spec = spec
            _loaded[action] = obj
        return _loaded[action]


__all__ = ["ON_OVERFLOW", "SPECS", "ActionSpec", "Param", "Action", "get_spec", "load_action", "CAPTURE_OUTPUTS"]
