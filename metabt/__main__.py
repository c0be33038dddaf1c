"""``python -m metabt``: the same as the ``metabt`` command."""

import sys

from metabt.cli import main

sys.exit(main())
