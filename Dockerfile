# The Turnout control plane and CLI (for docker-compose.yml on GPU hosts).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY xds_server ./xds_server
COPY triton_slots ./triton_slots
COPY gates ./gates
COPY turnout ./turnout
COPY envoy ./envoy
COPY examples ./examples
# The control plane's own dependencies only: Envoy and Triton run in their own images
# (`bench.install_size`: 486 MiB installed before the `local` extra split them off).
RUN pip install --no-cache-dir .
ENTRYPOINT ["python", "-m"]
CMD ["turnout.controlplane", "--config", "/state/controlplane.json"]
