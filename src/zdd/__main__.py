"""``python -m zdd``: the same as the ``zdd`` command."""

import sys

from .cli import main

sys.exit(main())
