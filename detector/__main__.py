"""Allow ``python -m detector`` as a synonym of the ``smokedet`` command."""

import sys

from detector.cli import main

sys.exit(main())
