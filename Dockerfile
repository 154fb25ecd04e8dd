# imactor: an XMPP server. Build: docker build -t imactor .
# Run:   docker run -p 5222:5222 -p 5223:5223 -v imactor-data:/var/lib/imactor imactor
FROM python:3.11-slim

WORKDIR /opt/imactor
COPY pyproject.toml README.md ./
COPY imactor ./imactor
COPY supervisors ./supervisors
COPY conf ./conf
RUN pip install --no-cache-dir . \
    && useradd --system --home /var/lib/imactor imactor \
    && mkdir -p /var/lib/imactor /etc/imactor \
    && cp conf/imactor.docker.toml /etc/imactor/imactor.toml \
    && chown imactor /var/lib/imactor

USER imactor
EXPOSE 5222 5223
VOLUME /var/lib/imactor

# Healthy = the status socket answers with a snapshot (exit 1 when the server cannot be reached).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD imactor status --config /etc/imactor/imactor.toml > /dev/null

STOPSIGNAL SIGTERM
CMD ["imactor", "supervise", "--config", "/etc/imactor/imactor.toml"]
