# The online service image: slim, no torch/transformers/ray (only onnxruntime, faiss-cpu, FastAPI).
#   docker build -f deploy/online.Dockerfile -t groundrec-online .
#   docker run -p 8000:8000 -v /srv/groundrec/artifacts:/artifacts:ro -v groundrec-events:/events groundrec-online
# The artifacts are mounted read-only: the event store (events, impressions, live items) lives in /events.
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1

WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY offline ./offline
COPY online ./online
COPY shared ./shared
RUN pip install .

RUN useradd --create-home --uid 1000 groundrec && mkdir /events && chown groundrec /events
USER groundrec
EXPOSE 8000
# Ready only once a version is loaded (503 before): the orchestrator holds traffic until then.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status != 200)"]
ENTRYPOINT ["groundrec"]
CMD ["serve", "--artifacts", "/artifacts", "--events", "sqlite:////events/events.db", "--host", "0.0.0.0", "--port", "8000"]
