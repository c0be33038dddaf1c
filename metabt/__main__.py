"""``python -m metabt``: the same as the ``metabt`` command."""

import os
import sys

# `python -m` puts the working directory first on sys.path, where a stray jinja2.py or
# tomllib.py would shadow the real module: move it to the end, so installed packages win and
# a user's own model or feature module there is still found.
_cwd = os.getcwd()
_front = [p for p in sys.path if p in ("", _cwd)]
sys.path[:] = [p for p in sys.path if p not in ("", _cwd)] + _front[:1]

from metabt.cli.main import main  # noqa: E402

sys.exit(main())
