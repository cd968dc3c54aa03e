"""`python -m dth_ray` runs the CLI."""

import sys

from dth_ray.cli import main

sys.exit(main())
