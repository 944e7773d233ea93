"""The local stack's processes that are not the app or the API: the supervisor (:mod:`.stack`), the
Prefect server (:mod:`.prefect_server`), JupyterLab (:mod:`.lab`) and the metrics exporter
(:mod:`.exporter`). Each starts as a ``mnist-hitl`` subcommand.
"""
