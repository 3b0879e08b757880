# vaultwarden with litevisor as PID 1. Build litevisor first (make), then:
#   docker build -f jobs/vaultwarden.Dockerfile -t registry.local/vaultwarden-litevisor:1.32 .
FROM vaultwarden/server:1.32.0
# libcurl4, libmicrohttpd12 and libssl3 are loaded when first needed (S3, the
# health server), so ldd does not list them; they are still required.
RUN apt-get update && apt-get install -y --no-install-recommends \
      libsqlite3-0 libcurl4 libjansson4 libyaml-0-2 libmicrohttpd12 liblz4-1 libssl3 \
    && rm -rf /var/lib/apt/lists/*
COPY build/litevisor /usr/local/bin/litevisor
# litevisor restores the database before vaultwarden starts and forwards
# SIGTERM/SIGUSR1; it is PID 1, so it is the ENTRYPOINT (no tini needed).
ENTRYPOINT ["/usr/local/bin/litevisor"]
CMD ["run", "-config", "/local/litevisor.yml", "--", "/start.sh"]
STOPSIGNAL SIGTERM
