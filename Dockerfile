# parley: worker, engine watcher and CLI in one image, with the GPU extras (TensorRT, ONNX Runtime GPU,
# cuda-python) and the train extra (torch: the parity reference the watcher verifies engines against).
# The NVIDIA driver comes from the node through the NVIDIA container runtime; CUDA libraries come from
# the wheels. This project's machines have no Docker engine: the file is kept minimal and is not built
# in CI here (see docs/deploy.md).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY parley ./parley
COPY stream ./stream
COPY engines ./engines
COPY train ./train
RUN pip install ".[gpu,train]" && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin parley

USER 10001
# /metrics, /healthz, /readyz of the worker
EXPOSE 6066
ENTRYPOINT ["parley"]
CMD ["stream", "worker"]
