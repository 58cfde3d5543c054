"""What install wrote, remembered in ``<data>/installed.json`` so that uninstall removes exactly that.

The record also keeps the ids given with ``install --extension-id``: the host accepts those
callers besides the pinned ones, and doctor expects them in every manifest.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from .. import config
from ..identity import CHROME_EXTENSION_ID, FIREFOX_EXTENSION_ID
from .contents import split_extension_ids
from .files import write_text

RECORD_NAME = "installed.json"


@dataclass
class Registration:
    """One manifest location (and, on Windows, the registry key pointing to it)."""

    browsers: list[str]
    family: str
    scope: str
    manifest: str
    launcher: str  # what the manifest's "path" names
    registry_key: str | None = None
    hive: str | None = None
    flatpak_app: str | None = None
    user_data_dir: str | None = None  # a browser profile folder given with --user-data-dir

    @property
    def ident(self) -> tuple[str, str | None, str | None]:
        return (self.manifest, self.hive, self.registry_key)

    @property
    def location(self) -> str:
        if self.registry_key:
            return f"{self.hive}\\{self.registry_key}"
        return self.manifest

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Registration":
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in names})


def record_path(data_dir: Path | str | None = None) -> Path:
    return Path(data_dir or config.data_dir()) / RECORD_NAME


def load_record(data_dir: Path | str | None = None) -> dict:
    path = record_path(data_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    data.setdefault("version", 1)
    data.setdefault("registrations", [])
    data.setdefault("extension_ids", [])
    data.setdefault("gecko_ids", [])
    return data


def save_record(data_dir: Path | str, record: dict) -> None:
    write_text(record_path(data_dir), json.dumps(record, indent=2) + "\n", mode=0o600)


def registrations_in(record: dict) -> list[Registration]:
    return [Registration.from_dict(r) for r in record["registrations"] if isinstance(r, dict)]


def recorded_registrations(data_dir: Path | str | None = None) -> list[Registration]:
    return registrations_in(load_record(data_dir))


def ids_with(record: dict, extension_ids: Iterable[str]) -> tuple[list[str], list[str]]:
    """(Chrome ids, Firefox add-on ids): the recorded ones, then those given now; BadRequest on junk."""
    new_chrome, new_gecko = split_extension_ids(extension_ids)
    return (list(dict.fromkeys([*record["extension_ids"], *new_chrome])),
            list(dict.fromkeys([*record["gecko_ids"], *new_gecko])))


def _recorded_ids(data_dir: Path | str | None, kind: str, pinned: str) -> set[str]:
    return {pinned, *(i for i in load_record(data_dir)[kind] if isinstance(i, str))}


def registered_extension_ids(data_dir: Path | str | None = None) -> set[str]:
    """Chrome ids the host accepts as its caller: the pinned one plus ``install --extension-id``."""
    return _recorded_ids(data_dir, "extension_ids", CHROME_EXTENSION_ID)


def registered_gecko_ids(data_dir: Path | str | None = None) -> set[str]:
    """Firefox add-on ids the host accepts as its caller: the pinned one plus ``install --extension-id``."""
    return _recorded_ids(data_dir, "gecko_ids", FIREFOX_EXTENSION_ID)
