# The offline job image: Ray + torch + groundrec[offline]. Runs `groundrec offline run` /
# `groundrec eval`, and serves as the image of Ray head and worker pods (KubeRay).
#   docker build -f deploy/offline.Dockerfile -t groundrec-offline .
#   GPU: docker build -f deploy/offline.Dockerfile --build-arg BASE_IMAGE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 \
#        --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124 --build-arg FAISS=faiss-gpu-cu12 -t groundrec-offline:gpu .
ARG BASE_IMAGE=ubuntu:22.04
FROM ${BASE_IMAGE}
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG FAISS=faiss-cpu

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/groundrec PATH=/opt/groundrec/bin:$PATH
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-pip ca-certificates \
    && rm -rf /var/lib/apt/lists/* && python3 -m venv /opt/groundrec

WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY offline ./offline
COPY online ./online
COPY shared ./shared
COPY deploy/serve.py ./deploy/serve.py
RUN pip install --index-url ${TORCH_INDEX} torch torchvision \
    && pip install ".[offline,serve]" ${FAISS} \
    && if [ "${FAISS}" != faiss-cpu ]; then pip uninstall -y faiss-cpu && pip install --force-reinstall --no-deps ${FAISS}; fi
# (faiss-cpu is a dependency of the package and ships the same `faiss` module: a GPU build replaces it, not beside it)

RUN useradd --create-home --uid 1000 groundrec && mkdir -p /data /artifacts && chown groundrec /data /artifacts
USER groundrec
ENV HF_HOME=/data/hf PYTHONPATH=/app
# PYTHONPATH: deploy/serve.yaml's app (deploy.serve:build_app) is importable on every Ray node of this image
ENTRYPOINT ["groundrec"]
CMD ["offline", "run", "--help"]
