"""The local stack's processes that are not the app or the API: the supervisor (:mod:`.stack`), the
Prefect server (:mod:`.prefect_server`), JupyterLab (:mod:`.lab`), the metrics exporter (:mod:`.exporter`),
and the command lines of the third-party servers, MLflow and Prometheus (:mod:`.tools`). Each starts as a
``mnist-hitl`` subcommand.
"""
