"""``python -m optiplug``: the same as the ``optiplug`` command."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
