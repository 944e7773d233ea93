# One image for every Python service of mnist-hitl, each a `mnist-hitl` command: the app, the HTTP API, the
# learning-cycle flow and its workers, the MLflow server, JupyterLab, the metrics exporter, and the Prefect server
# (`mnist-hitl prefect-server`). docker-compose.yml runs it; all data lives in the volume at MNIST_HITL_HOME (/data).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MNIST_HITL_HOME=/data \
    MNIST_HITL_APP_HOST=0.0.0.0 \
    PREFECT_HOME=/data/prefect \
    PREFECT_SERVER_ANALYTICS_ENABLED=false

WORKDIR /opt/mnist-hitl

# Dependencies first, so a code change does not reinstall them: the list in pyproject.toml.
COPY pyproject.toml /tmp/mnist-hitl/
RUN cd /tmp/mnist-hitl \
    && python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
        > requirements.txt \
    && pip install -r requirements.txt

# Then the package, installed as its wheel installs: the notebooks, flows, dashboards and Procfile go to
# /usr/local/share/mnist-hitl, where mnist_hitl/resources.py looks. The sources go afterwards, so that no
# process (a service, a healthcheck) can import them from a working folder instead.
COPY . /tmp/mnist-hitl
RUN pip install /tmp/mnist-hitl && rm -rf /tmp/mnist-hitl

VOLUME ["/data"]

# Every container start creates the data folders and removes the metrics files that
# processes of an earlier run of this container left (the files of running ones stay).
ENTRYPOINT ["sh", "-c", "mnist-hitl prepare && exec \"$@\"", "mnist-hitl"]
CMD ["mnist-hitl", "app"]
