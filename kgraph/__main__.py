"""``python -m kgraph`` is the ``kgraph`` command."""
import sys

from .cli import main

sys.exit(main())
