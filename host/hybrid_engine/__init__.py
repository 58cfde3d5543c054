"""Hybrid Engine: local-first AI workflows for pages sent from the browser.

The package is layered one way: transports (host, cli) -> service -> engine
(dag, executor, recovery) -> store. Adapters and pricing are leaves. Importing it
is cheap: no SDK, no trafilatura, no pydantic until a module needs them.
"""

__version__ = "0.1.0"
PROTOCOL_VERSION = 1

__all__ = ["__version__", "PROTOCOL_VERSION"]
