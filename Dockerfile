# logrouter image: the CLI and every daemon (`logrouter sink NAME`, `setup`, `tail`, ...).
#   docker build -t logrouter .      (docker-compose.yml builds it for you)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY logrouter ./logrouter
RUN pip install . \
    && rm -rf /src \
    && useradd --system --uid 10001 --home-dir /var/lib/logrouter --shell /usr/sbin/nologin logrouter \
    && mkdir -p /etc/logrouter /var/log/logrouter /var/lib/logrouter \
    && chown logrouter:logrouter /var/log/logrouter /var/lib/logrouter

# The default config; docker-compose.yml mounts ./config over /etc/logrouter instead.
COPY config/routing.toml /etc/logrouter/routing.toml
ENV LOGROUTER_CONFIG=/etc/logrouter/routing.toml

USER logrouter
WORKDIR /var/lib/logrouter
VOLUME ["/var/log/logrouter", "/var/lib/logrouter"]
ENTRYPOINT ["logrouter"]
CMD ["--help"]
