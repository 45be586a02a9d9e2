# One image for every Lifecycle process; compose picks the command.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY lifecycle ./lifecycle
COPY training ./training
COPY registry ./registry
COPY serving ./serving
COPY conf ./conf
COPY MLproject python_env.yaml ./
RUN pip install -c constraints.txt -e . && useradd --create-home lifecycle
USER lifecycle
ENV LIFECYCLE_CONF_DIR=/app/conf LIFECYCLE_DATA_DIR=/var/lib/lifecycle
