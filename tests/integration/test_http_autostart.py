"""`serve --install/--uninstall` (the login item) and what doctor says about the HTTP API.

The service manager is never the machine's: PATH holds a stand-in `systemctl` that records
its arguments (or none at all), and HOME / XDG_CONFIG_HOME point into the test's folder.
"""

from __future__ import annotations

import json
import os
import plistlib
import socket
import sys
from pathlib import Path

import pytest

UNIT = "hybrid-engine-serve.service"


@pytest.fixture
def world(tmp_path, cli):
    home, config_home, bin_dir = tmp_path / "home", tmp_path / "xdg", tmp_path / "bin"
    for d in (home, config_home, bin_dir):
        d.mkdir()
    cli.env.update(HOME=str(home), XDG_CONFIG_HOME=str(config_home), PATH=str(bin_dir))
    return type("World", (), {"home": home, "unit": config_home / "systemd" / "user" / UNIT, "bin": bin_dir,
                              "calls": tmp_path / "systemctl-calls", "cli": cli})


def fake_systemctl(world, exit_code: int = 0, said: str = "") -> None:
    script = world.bin / "systemctl"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {world.calls}\necho '{said}' >&2\nexit {exit_code}\n")
    script.chmod(0o755)


def calls(world) -> list[str]:
    return world.calls.read_text().splitlines() if world.calls.exists() else []


def test_install_writes_a_systemd_user_unit_running_serve_and_enables_it(world):
    fake_systemctl(world)
    proc = world.cli("serve", "--install", "--port", "7801", check=True)
    text = world.unit.read_text()
    assert f"ExecStart={sys.executable} -m hybrid_engine serve --port 7801" in text
    assert f"Environment=HYBRID_ENGINE_HOME={world.cli.env['HYBRID_ENGINE_HOME']}" in text
    assert "WantedBy=default.target" in text
    assert calls(world) == ["--user daemon-reload", f"--user enable --now {UNIT}"]
    assert f"ran `systemctl --user enable --now {UNIT}`" in proc.stdout


def test_install_without_systemctl_keeps_the_unit_and_says_what_to_run(world):
    proc = world.cli("serve", "--install", check=True)
    assert world.unit.exists() and "--port 7717" in world.unit.read_text()
    assert "systemctl not found" in proc.stdout and f"systemctl --user enable --now {UNIT}" in proc.stdout


def test_install_when_systemctl_has_no_user_bus_still_succeeds_and_says_so(world):
    fake_systemctl(world, exit_code=1, said="Failed to connect to bus: No medium found")
    proc = world.cli("serve", "--install", check=True)
    assert world.unit.exists()
    assert "Failed to connect to bus" in proc.stdout and "to start it now, run:" in proc.stdout


def test_install_refuses_port_0_a_login_item_needs_a_fixed_port(world):
    proc = world.cli("serve", "--install", "--port", "0")
    assert proc.returncode == 2 and "fixed port" in proc.stderr and not world.unit.exists()


def test_uninstall_disables_and_removes_the_unit(world):
    fake_systemctl(world)
    world.cli("serve", "--install", check=True)
    proc = world.cli("serve", "--uninstall", check=True)
    assert not world.unit.exists() and f"removed {world.unit}" in proc.stdout
    assert f"--user disable --now {UNIT}" in calls(world)


def test_install_again_with_another_port_restarts_the_running_server_on_it(world):
    """`enable --now` leaves a running server alone: a second install would keep the old port."""
    fake_systemctl(world)
    world.cli("serve", "--install", "--port", "7801", check=True)
    world.calls.unlink()
    proc = world.cli("serve", "--install", "--port", "7802", check=True)
    assert "--port 7802" in world.unit.read_text()
    assert calls(world)[-1] == f"--user restart {UNIT}" and f"ran `systemctl --user restart {UNIT}`" in proc.stdout


def test_on_macos_install_again_boots_the_old_agent_out_before_bootstrapping(monkeypatch, tmp_path):
    """launchctl refuses to bootstrap a label that is loaded (error 5)."""
    from hybrid_engine.httpapi import autostart

    record = tmp_path / "launchctl-calls"
    script = tmp_path / "launchctl"
    script.write_text(f"#!/bin/sh\necho \"$1\" >> {record}\n")
    script.chmod(0o755)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    autostart.install(7801, os_name="macos")
    autostart.install(7802, os_name="macos")
    assert record.read_text().split() == ["bootstrap", "bootout", "bootstrap"]


def test_uninstall_with_nothing_installed_says_so(world):
    assert "nothing to remove" in world.cli("serve", "--uninstall", check=True).stdout


def test_a_path_with_spaces_survives_the_units_quoting(monkeypatch, tmp_path):
    from hybrid_engine.httpapi import autostart

    monkeypatch.setattr(sys, "executable", "/opt/my tools/py%3/bin/python")
    path = tmp_path / UNIT
    path.write_text(autostart.systemd_unit(7801))
    assert autostart._installed_command(path, "linux") == (autostart.command(7801), 7801)


def test_on_macos_install_writes_a_launchd_agent(monkeypatch, tmp_path):
    from hybrid_engine.httpapi import autostart

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))  # no launchctl: the file is written, nothing loaded
    lines = autostart.install(7801, os_name="macos")
    agent = tmp_path / "Library" / "LaunchAgents" / "org.hybrid-engine.serve.plist"
    data = plistlib.loads(agent.read_bytes())
    assert data["ProgramArguments"] == [sys.executable, "-m", "hybrid_engine", "serve", "--port", "7801"]
    assert data["RunAtLoad"] is True and "launchctl not found" in lines[-1]
    autostart.uninstall(os_name="macos")
    assert not agent.exists()


# ---- doctor ---------------------------------------------------------------------------------

def doctor_codes(world) -> dict:
    out = json.loads(world.cli("doctor", "--no-launch", "--json").stdout)
    return {f["code"]: f for f in out["findings"]}


def test_doctor_names_a_login_item_whose_interpreter_is_gone(world):
    world.unit.parent.mkdir(parents=True)
    world.unit.write_text("[Service]\nExecStart=/gone/python3 -m hybrid_engine serve --port 7801\n")
    found = doctor_codes(world)["serve_unit_broken"]
    assert found["severity"] == "error" and "/gone/python3" in found["problem"]
    assert "serve --install" in found["fix"]


def test_doctor_says_when_the_installed_api_does_not_answer(world):
    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    world.cli("serve", "--install", "--port", str(port), check=True)
    found = doctor_codes(world)["serve_not_running"]
    assert found["severity"] == "warning" and str(port) in found["problem"]


def test_doctor_says_nothing_of_the_api_when_it_is_not_installed(world):
    codes = doctor_codes(world)
    assert not {"serve_unit_broken", "serve_not_running", "http_token_readable"} & set(codes)


def test_doctor_warns_about_a_token_file_others_can_read(world):
    world.cli("serve", "--show-token", check=True)
    token = Path(world.cli.env["HYBRID_ENGINE_HOME"]) / "http-token"
    os.chmod(token, 0o644)
    found = doctor_codes(world)["http_token_readable"]
    assert found["fix"] == f"chmod 600 {token}"
