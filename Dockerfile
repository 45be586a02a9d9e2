# Two images (compose.yaml picks the target and the command):
#   lifecycle  every Lifecycle process (`lifecycle serve|worker|tracking|ui|...`);
#   airflow    the same, plus Airflow in a virtualenv of its own (/opt/airflow): its pinned
#              fastapi conflicts with the project's. Its tasks run Lifecycle's code with the
#              image's python (LIFECYCLE_PROJECT_PYTHON), never by importing across the two.
FROM python:3.11-slim AS lifecycle
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY lifecycle ./lifecycle
COPY training ./training
COPY registry ./registry
COPY serving ./serving
COPY reports ./reports
COPY ui ./ui
COPY pipelines ./pipelines
COPY conf ./conf
COPY MLproject python_env.yaml ./
# The data folder belongs to the user the services run as: a named volume mounted there
# starts with the image's owner.
RUN pip install -c constraints.txt -e . && useradd --create-home lifecycle \
    && mkdir -p /var/lib/lifecycle && chown lifecycle /var/lib/lifecycle
USER lifecycle
ENV LIFECYCLE_CONF_DIR=/app/conf LIFECYCLE_DATA_DIR=/var/lib/lifecycle

FROM lifecycle AS airflow
USER root
# The same two files `make airflow` installs from.
RUN python -m venv /opt/airflow \
    && /opt/airflow/bin/pip install -c pipelines/airflow/constraints.txt \
        -r pipelines/airflow/requirements.txt
USER lifecycle
# pipelines/dags (DAGs folder) is /app/pipelines/dags; AIRFLOW_HOME sits on the data volume.
ENV LIFECYCLE_AIRFLOW_VENV=/opt/airflow LIFECYCLE_PROJECT_PYTHON=/usr/local/bin/python \
    AIRFLOW_HOME=/var/lib/lifecycle/airflow PATH=/opt/airflow/bin:$PATH
