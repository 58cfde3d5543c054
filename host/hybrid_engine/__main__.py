import sys

if len(sys.argv) > 1 and sys.argv[1] == "host" and not any(a.startswith("-") and not a.startswith("--parent-window=")
                                                          for a in sys.argv[2:]):
    # The browser starts the host through here (the launcher runs `python -m hybrid_engine host
    # ...`): straight to the host, without the CLI's argparse and config imports, so the first
    # reply comes sooner. `host --help` and the like still go through the CLI.
    from .hostboot import main as host_main

    sys.exit(host_main(sys.argv[2:]))

from .cli import main  # noqa: E402

sys.exit(main())
