"""``python -m hmh ...``: the ``hmh`` command (hmh.cli)."""

import sys

from hmh.cli import main

sys.exit(main())
