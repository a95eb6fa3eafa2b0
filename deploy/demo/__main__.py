"""`python -m deploy.demo start|stop|status`."""

import sys

from deploy.demo.demo import main

sys.exit(main())
