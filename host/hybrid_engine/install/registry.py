"""The Windows registry, where Windows browsers look up a native host's manifest.

Each browser reads the default value of ``<hive>\\<its key>\\hybrid_engine``: the manifest's path.
``MemoryRegistry`` stands in for it in tests and dry runs on any OS.
"""

from __future__ import annotations

import sys
from typing import Protocol

from ..errors import BadRequest
from .browsers import WINDOWS


class Registry(Protocol):
    def get_default(self, hive: str, key: str) -> str | None: ...
    def set_default(self, hive: str, key: str, value: str) -> None: ...
    def delete(self, hive: str, key: str) -> bool: ...


class MemoryRegistry:
    """A registry in a dict: for tests and dry runs on any OS. Keys are case-insensitive."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], str] = {}

    def get_default(self, hive: str, key: str) -> str | None:
        return self.values.get((hive, key.lower()))

    def set_default(self, hive: str, key: str, value: str) -> None:
        self.values[(hive, key.lower())] = value

    def delete(self, hive: str, key: str) -> bool:
        return self.values.pop((hive, key.lower()), None) is not None


class WindowsRegistry:
    """HKCU/HKLM through winreg (Windows only)."""

    def __init__(self) -> None:
        import winreg  # noqa: PLC0415 - only exists on Windows

        self._winreg = winreg
        self._roots = {"HKCU": winreg.HKEY_CURRENT_USER, "HKLM": winreg.HKEY_LOCAL_MACHINE}

    def get_default(self, hive: str, key: str) -> str | None:
        try:
            with self._winreg.OpenKey(self._roots[hive], key) as handle:
                value, _kind = self._winreg.QueryValueEx(handle, "")
                return str(value)
        except FileNotFoundError:
            return None

    def set_default(self, hive: str, key: str, value: str) -> None:
        with self._winreg.CreateKeyEx(self._roots[hive], key, 0, self._winreg.KEY_WRITE) as handle:
            self._winreg.SetValueEx(handle, "", 0, self._winreg.REG_SZ, value)

    def delete(self, hive: str, key: str) -> bool:
        try:
            self._winreg.DeleteKey(self._roots[hive], key)
            return True
        except FileNotFoundError:
            return False


def registry_for(os_name: str, registry: Registry | None, *, writing: bool = True) -> Registry | None:
    """The registry to use for ``os_name``: the one given, else the real one on Windows.

    Writing it anywhere else is a mistake (BadRequest); reading it there finds nothing (None).
    """
    if os_name != WINDOWS:
        return None
    if registry is not None:
        return registry
    if not sys.platform.startswith("win"):
        if not writing:
            return None
        raise BadRequest("the Windows registry can only be written on Windows (pass a MemoryRegistry to plan)")
    return WindowsRegistry()

