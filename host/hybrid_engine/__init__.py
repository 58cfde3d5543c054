"""Hybrid Engine: local-first AI workflows for pages sent from the browser.

The package is layered one way: transports (host, cli) -> service -> engine
(dag, executor, recovery) -> store. Adapters and pricing are leaves. Importing it
is cheap: no SDK, no trafilatura, no pydantic until a module needs them.
"""

__version__ = "0.1.0"
PROTOCOL_VERSION = 1
MAX_INCOMING = 64 * 1024 * 1024  # native messaging: browser -> host, per frame
MAX_OUTGOING = 1024 * 1024  # host -> browser, per frame (JSON body bytes)

__all__ = ["__version__", "PROTOCOL_VERSION", "MAX_INCOMING", "MAX_OUTGOING"]
