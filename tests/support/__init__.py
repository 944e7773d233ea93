"""What the tiers share: running the ``mnist-hitl`` command and free ports (``helpers``), the learning
loop's homes and users (``loop``), the scale-out servers (``scale``), a user session in a process of its
own (``user_session``). The PostgreSQL server and Chromium's flags are the benchmarks', in ``bench/support.py``.
"""
