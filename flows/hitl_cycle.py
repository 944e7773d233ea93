"""The ``hitl-cycle`` Prefect flow, for ``prefect`` commands and ``python flows/hitl_cycle.py``.

The flow's code lives in :mod:`mnist_hitl.learning.loop.schedule`; this file is its entry point.

    python flows/hitl_cycle.py            serve the flow on its schedule (starts a local Prefect server if none)
    python flows/hitl_cycle.py --once     run one cycle now as a flow run
"""

from mnist_hitl.learning.loop.schedule import hitl_cycle, main

__all__ = ["hitl_cycle"]

if __name__ == "__main__":
    main()
