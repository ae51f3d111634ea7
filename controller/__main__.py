"""`python -m controller` runs the same command as `ack-secret-manager`."""

import sys

from controller.cli import main

sys.exit(main())
