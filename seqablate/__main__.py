"""``python -m seqablate`` (what ``ray job submit`` runs on the cluster)."""

from __future__ import annotations

import sys

from seqablate.cli import main

sys.exit(main())
