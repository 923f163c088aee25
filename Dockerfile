# The losswatch service image (docker-compose.yml builds it). Two stages: the wheel and its
# dependencies are built with pip in the first, the runtime stage only copies the installed tree
# and runs as an unprivileged user.
FROM python:3.11-slim AS build
# a C compiler for the detectors' compiled recursions (optional: without it the pure-Python loops run)
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY client ./client
COPY detectors ./detectors
COPY service ./service
COPY dashboards ./dashboards
RUN pip install --no-cache-dir --prefix=/install ".[server]"

FROM python:3.11-slim
RUN useradd --system --uid 10001 --create-home --home-dir /home/losswatch losswatch
COPY --from=build /install /usr/local
USER losswatch
WORKDIR /home/losswatch
ENV PYTHONUNBUFFERED=1
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["losswatch"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
