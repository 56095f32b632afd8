"""`python -m byakugan.ui.cli` is the `byakugan` command."""

import sys

from . import main

sys.exit(main())
