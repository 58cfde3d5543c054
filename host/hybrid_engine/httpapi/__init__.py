"""The HTTP API on loopback: `hybrid-engine serve`, for scripts, launchers and editors.

Nothing here is imported by the native host or the rest of the CLI: FastAPI and uvicorn
load only when `serve` runs. command.py is the CLI's entry (argparse only), server.py
starts uvicorn and keeps a background worker for queued work, guard.py is what every
request passes first (Host header, Origin, token, body size), app.py the routes over
service.Service, token.py the bearer token file, autostart.py the login item.
"""
