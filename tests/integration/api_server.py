"""`hybrid-engine serve --port 0` as a subprocess, and curl to talk to it.

    with ApiServer(home) as api:           # waits for the line naming the bound port
        status, body = api.curl("GET", "/workflows")
        status, body = api.curl("POST", "/workflows/ID/external-data", json={...})
        api.curl("GET", "/spend", token=None, headers=["Host: evil.example"])

curl is what the acceptance checklist names and what people will use; every request goes
over a real TCP connection to the real server.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from host_client import HANG_GUARD_S, host_env

CURL = shutil.which("curl")


class ApiServer:
    def __init__(self, home: Path, *, extra_env: dict | None = None, args: list[str] = ()):
        self.home = Path(home)
        self.env = host_env(home, extra_env)
        self.stderr_file = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([sys.executable, "-m", "hybrid_engine", "serve", "--port", "0", *args],
                                     stdout=subprocess.PIPE, stderr=self.stderr_file, env=self.env, text=True)
        line = self.proc.stdout.readline()  # the server prints it once the socket listens
        found = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if not found:
            self.close()
            raise AssertionError(f"serve printed {line!r} instead of its address; stderr: {self.stderr()}")
        self.port = int(found.group(1))
        self.base = f"http://127.0.0.1:{self.port}"
        self.token = (self.home / "http-token").read_text(encoding="ascii").strip()

    def stderr(self) -> str:
        self.stderr_file.seek(0)
        return self.stderr_file.read().decode("utf-8", "replace")

    def curl(self, method: str, path: str, *, json_body=None, data: bytes | None = None,
             token: str | None | bool = True, headers: list[str] = (), ctype: str | None = None,
             raw: bool = False) -> tuple[int, object]:
        """(status, body as JSON, or bytes with raw=True)."""
        assert CURL, "curl is missing: apt-get install -y curl"
        argv = [CURL, "-s", "-S", "-X", method, "-o", "-", "-w", "\n%{http_code}", "--max-time", str(HANG_GUARD_S)]
        if token is True:
            token = self.token
        if token:
            argv += ["-H", f"Authorization: Bearer {token}"]
        if json_body is not None:
            data, ctype = json.dumps(json_body).encode("utf-8"), ctype or "application/json"
        if ctype:
            argv += ["-H", f"Content-Type: {ctype}"]
        for h in headers:
            argv += ["-H", h]
        if data is not None:
            argv += ["--data-binary", "@-"]
        argv.append(self.base + path)
        proc = subprocess.run(argv, input=data, capture_output=True, timeout=HANG_GUARD_S + 10)
        assert proc.returncode == 0, f"curl failed: {proc.stderr.decode(errors='replace')}"
        body, _, status = proc.stdout.rpartition(b"\n")
        return int(status), (body if raw else json.loads(body))

    def close(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        return self.proc.returncode

    def __enter__(self) -> "ApiServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
