"""``python -m datadistill.cli``: the ``datadistill`` command."""

import sys

from . import main

sys.exit(main())
