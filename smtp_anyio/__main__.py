"""``python -m smtp_anyio``: see :mod:`smtp_anyio._cli`."""

import sys

from ._cli import main

sys.exit(main())
