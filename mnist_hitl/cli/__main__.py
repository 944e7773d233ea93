"""``python -m mnist_hitl.cli``: the ``mnist-hitl`` command, for a child process of this very interpreter."""

import sys

from mnist_hitl.cli.main import main

sys.exit(main())
