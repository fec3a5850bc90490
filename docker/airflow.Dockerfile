# The Airflow image docker-compose.yaml runs: Airflow 3.3.2 (api-server, scheduler,
# dag-processor, triggerer, Celery workers) with the ISE project installed.
#
#   docker compose build          # from the project root (the build context)
#
# The project is installed editable at /opt/ise; docker-compose.yaml mounts the checkout there,
# so DAG, plugin and params edits on the host apply without a rebuild, and data/, dvc.lock and
# the DVC cache stay in the checkout. Rebuild when requirements.lock changes.
FROM apache/airflow:3.3.2-python3.11

USER root
# bubblewrap: the local workspace backend (a fallback when the sandbox engine is down);
# git: DVC reads the checkout's repository when it records lineage.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends bubblewrap git \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /opt/ise \
 && chown airflow:root /opt/ise
USER airflow
WORKDIR /opt/ise

# Dependencies first (cached while only the code changes). The CPU build of torch is pinned
# before anything else: an unpinned install pulls a multi-GB CUDA build. The lock is a full
# freeze of a tested environment (Airflow 3.3.2 included), so it installs without resolution;
# the Celery and Postgres providers come with the base image.
COPY --chown=airflow:root requirements.lock pyproject.toml README.md ./
RUN pip install --no-cache-dir "torch==2.13.0" \
 && pip install --no-cache-dir --no-deps -r requirements.lock

COPY --chown=airflow:root ise_core ./ise_core
COPY --chown=airflow:root dags ./dags
COPY --chown=airflow:root plugins ./plugins
COPY --chown=airflow:root params.yaml dvc.yaml .dvcignore ./
RUN pip install --no-cache-dir --no-deps -e . \
 && python -c "import ise_core.pipeline, ise_core.cli"

ENV AIRFLOW__CORE__DAGS_FOLDER=/opt/ise/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/ise/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    ISE_PARAMS=/opt/ise/params.yaml \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    DVC_NO_ANALYTICS=1 \
    TOKENIZERS_PARALLELISM=false
