"""`hybrid-engine serve`: its arguments and what each form does. Nothing heavy at import."""

from __future__ import annotations

import sys

EXPOSE_FLAG = "--expose-to-network"


def add_arguments(sp) -> None:
    from .server import DEFAULT_PORT

    sp.add_argument("--port", type=int, default=DEFAULT_PORT, metavar="N",
                    help=f"TCP port on 127.0.0.1 (default {DEFAULT_PORT}; 0 picks a free one and prints it)")
    sp.add_argument("--host", default="127.0.0.1", metavar="ADDR",
                    help=f"address to listen on; anything but loopback also needs {EXPOSE_FLAG}")
    sp.add_argument(EXPOSE_FLAG, dest="expose", action="store_true",
                    help="allow --host to be an address other computers can reach (anyone who has the token "
                         "can then run your templates and read your runs)")
    what = sp.add_mutually_exclusive_group()
    what.add_argument("--show-token", action="store_true", help="print the bearer token (made if there is none)")
    what.add_argument("--install", action="store_true",
                      help="start the API on login: a systemd user unit (Linux) or a launchd agent (macOS)")
    what.add_argument("--uninstall", action="store_true", help="remove what --install wrote")


def run(args) -> int:
    from ..errors import BadRequest

    if not 0 <= args.port <= 65535:
        raise BadRequest(f"--port: expected a port from 0 to 65535, got {args.port}")
    if args.show_token:
        return _show_token()
    if args.install or args.uninstall:
        return _autostart(args)
    from .server import is_loopback, is_wildcard, serve

    if not is_loopback(args.host):
        if not args.expose:
            raise BadRequest(f"--host {args.host}: not a loopback address; other computers could reach the API. "
                             f"Add {EXPOSE_FLAG} if that is what you want")
        if is_wildcard(args.host):
            # Every request names the address it called in its Host header, and only the one
            # given here passes the check against DNS rebinding: with a wildcard none would.
            raise BadRequest(f"--host {args.host}: listens on every address, but requests are only answered "
                             "for the address given here; give the one address other computers call, "
                             "e.g. --host 192.168.1.5")
        print(f"WARNING: the HTTP API listens on {args.host}, reachable from other computers on that network; "
              "anyone with the token can run your templates and read your runs", file=sys.stderr, flush=True)
    try:
        return serve(args.host, args.port)
    except OSError as exc:
        raise BadRequest(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
                         + ("; another program uses that port: pick another with --port N"
                            if getattr(exc, "errno", None) in (98, 48, 10048) else "")) from None
    except KeyboardInterrupt:
        return 0


def _show_token() -> int:
    from . import token

    secret = token.load_or_create()
    print(f"the HTTP API token, from {token.path()}; send it as 'Authorization: Bearer TOKEN':")
    print(secret)
    return 0


def _autostart(args) -> int:
    from . import autostart

    from ..errors import BadRequest

    if args.uninstall:
        report = autostart.uninstall()
    elif args.port == 0:
        raise BadRequest("--port 0: starting on login needs a fixed port for scripts to call; give --port N")
    else:
        report = autostart.install(port=args.port)
    for line in report:
        print(line)
    return 0
