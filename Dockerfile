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
RUN pip install --no-cache-dir -e .
ENTRYPOINT ["python", "-m"]
CMD ["turnout.controlplane", "--config", "/state/controlplane.json"]
