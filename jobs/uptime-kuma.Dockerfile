# Uptime Kuma 2 with litevisor as PID 1. Build litevisor first (make), then:
#   docker build -f jobs/uptime-kuma.Dockerfile -t registry.local/uptime-kuma-litevisor:2 .
# Pin the exact 2.x release you run instead of the major tag for builds that
# repeat. The 2.x image is node:22-bookworm-slim underneath (base2-slim in
# docker/debian-base.dockerfile): Debian 12 and glibc, as litevisor is built for.
FROM louislam/uptime-kuma:2
# libcurl4, libmicrohttpd12 and libssl3 are loaded when first needed (S3, the
# health server), so ldd does not list them; they are still required.
RUN apt-get update && apt-get install -y --no-install-recommends \
      libsqlite3-0 libcurl4 libjansson4 libyaml-0-2 libmicrohttpd12 liblz4-1 libssl3 \
    && rm -rf /var/lib/apt/lists/*
COPY build/litevisor /usr/local/bin/litevisor
# The image's ENTRYPOINT is dumb-init, there to reap the zombies of Kuma's
# ping and other child processes (uptime-kuma #480); litevisor reaps them as
# PID 1 and restores kuma.db before Kuma starts, so it replaces dumb-init.
# WORKDIR stays /app, where "node server/server.js" expects to run.
ENTRYPOINT ["/usr/local/bin/litevisor"]
CMD ["run", "-config", "/local/litevisor.yml", "--", "node", "server/server.js"]
STOPSIGNAL SIGTERM
