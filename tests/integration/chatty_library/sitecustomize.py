"""A library that talks on stdout, put in front of the host for one test.

Python imports this file at start when its folder is on PYTHONPATH. It makes the import
of the host's transport (hybrid_engine.host, loaded once the host is running) print a
line and write one straight to fd 1, as a chatty third-party library or a C extension
would: both must end up on stderr, never in the frames the browser reads.
"""

import os
import sys


class _ChattyImport:
    """A meta path finder that only talks: it finds nothing, so the real import goes on."""

    done = False

    def find_spec(self, name, path=None, target=None):
        if name == "hybrid_engine.host" and not self.done:
            self.done = True
            print("stray print from the host (must not reach stdout)")
            os.write(1, b"stray fd-1 write from the host (must not reach stdout)\n")
        return None


sys.meta_path.insert(0, _ChattyImport())
