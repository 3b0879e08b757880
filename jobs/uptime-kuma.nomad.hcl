# Uptime Kuma in Docker with litevisor as the ENTRYPOINT (PID 1), the way
# vaultwarden.nomad.hcl runs Vaultwarden: Kuma is a Node.js app published as
# an image (louislam/uptime-kuma), and that is how it is normally run.
#
# The image adds /usr/local/bin/litevisor (jobs/uptime-kuma.Dockerfile) and
# replaces the image's dumb-init: litevisor reaps the zombies Kuma's ping
# monitors leave (uptime-kuma #480), restores kuma.db before Kuma starts,
# forwards SIGTERM, and flushes on stop.
#
# Kuma's facts (louislam/uptime-kuma: server/database.js,
# server/setup-database.js, server/routers/api-router.js, docker/dockerfile):
# one database, kuma.db in DATA_DIR (default ./data/, so /app/data in the
# image), in WAL mode; port 3001. Its TRUNCATE checkpoint on close and the
# VACUUM of "Shrink database" replicate as ordinary WAL traffic
# (docs/replication.md; under Litestream that TRUNCATE fails busy).
# Kuma 2 asks in its browser which database to use unless db-config.json or
# UPTIME_KUMA_DB_TYPE says so: the job sets UPTIME_KUMA_DB_TYPE=sqlite, so a
# first start (no kuma.db anywhere yet) never waits on that page.
# Health: the image's HEALTHCHECK expects a 302 from "/", but litevisor's probe
# takes 2xx only and follows no redirect; /api/entry-page answers 200 with
# JSON once the main server runs, after the database is connected (the
# setup-database server answers it too, which UPTIME_KUMA_DB_TYPE rules out).
#
# /app/data lives in the container and is restored from the replicas on each
# start, as for Vaultwarden. Only kuma.db is replicated: uploaded status-page
# logos (data/upload/) are not. Keep them elsewhere, or bind a host directory
# to /app/data (needs the docker plugin's volumes enabled on the clients).
#
# Stop budget: docker stop with kill_timeout 25 s (within the client's default
# max_kill_timeout of 30 s): stop-grace 15 s (Kuma closes its database on
# SIGTERM, checkpointing it, which can take a few seconds) + flush 7 s + up to
# 2 s for the replication threads = 24 s. tests/test_jobs.py checks this.
job "uptime-kuma" {
  datacenters = ["homelab"]
  type        = "service"

  group "uptime-kuma" {
    count = 1

    # A node cut off from the servers stops its task after 30 s instead of
    # running on beside the replacement the servers start elsewhere: its final
    # flush closes its generation, and the replacement, waiting for that
    # (restore.handover-wait, 20 s), continues it with every commit. Without
    # this both nodes write, and the one that writes last wins the next
    # restore (litevisor logs "another writer" on the other). Nomad < 1.8:
    # stop_after_client_disconnect = "30s" in the group instead.
    disconnect {
      stop_on_client_after = "30s"
    }

    network {
      port "http" {
        static = 3001
        to     = 3001
      }
      port "sup" {
        to = 9090
      }
    }

    service {
      provider = "nomad"
      name     = "uptime-kuma"
      port     = "http"
    }

    # litevisor's own endpoint: /readyz is 200 once kuma.db is restored and
    # Kuma answers /api/entry-page; replication trouble alone never fails it.
    service {
      provider = "nomad"
      name     = "uptime-kuma-litevisor"
      port     = "sup"

      check {
        type     = "http"
        path     = "/readyz"
        interval = "10s"
        timeout  = "2s"

        check_restart {
          limit = 3
          grace = "180s"
        }
      }
    }

    task "uptime-kuma" {
      driver       = "docker"
      kill_signal  = "SIGTERM"
      kill_timeout = "25s"

      config {
        image      = "registry.local/uptime-kuma-litevisor:2"
        ports      = ["http", "sup"]
        entrypoint = ["/usr/local/bin/litevisor"]
        args       = ["run", "-config", "/local/litevisor.yml", "--", "node", "server/server.js"]
      }

      env {
        UPTIME_KUMA_DB_TYPE = "sqlite"
        UPTIME_KUMA_PORT    = "3001"
      }

      # MinIO credentials from Nomad Variables, written under secrets/
      # (/secrets in the container, $NOMAD_SECRETS_DIR). litevisor re-reads the
      # files when they change, so no restart is needed.
      template {
        destination = "secrets/s3_key"
        change_mode = "noop"
        data        = "{{ with nomadVar \"nomad/jobs/uptime-kuma\" }}{{ .s3_key }}{{ end }}"
      }

      template {
        destination = "secrets/s3_secret"
        change_mode = "noop"
        data        = "{{ with nomadVar \"nomad/jobs/uptime-kuma\" }}{{ .s3_secret }}{{ end }}"
      }

      template {
        destination = "local/litevisor.yml"
        change_mode = "restart"
        data        = <<LITEVISOR
node: {{ env "node.unique.name" }}
addr: ":9090"

stores:
  minio-105:
    type: s3
    endpoint: http://10.99.1.105:9100
    bucket: litevisor
    node: node-105
    access-key-id-file: ${NOMAD_SECRETS_DIR}/s3_key
    secret-access-key-file: ${NOMAD_SECRETS_DIR}/s3_secret
  minio-106:
    type: s3
    endpoint: http://10.99.1.106:9100
    bucket: litevisor
    node: node-106
    access-key-id-file: ${NOMAD_SECRETS_DIR}/s3_key
    secret-access-key-file: ${NOMAD_SECRETS_DIR}/s3_secret
  nas:
    type: s3
    endpoint: http://10.0.0.200:9000
    bucket: backups
    access-key-id-file: ${NOMAD_SECRETS_DIR}/s3_key
    secret-access-key-file: ${NOMAD_SECRETS_DIR}/s3_secret

restore:
  probe-timeout: 1s

supervisor:
  stop-grace: 15s
  flush-timeout: 7s

health:
  probe-url: http://127.0.0.1:3001/api/entry-page

dbs:
  - path: /app/data/kuma.db
    replicas:
      - { store: minio-105, path: uptime-kuma/kuma.db, sync-interval: 5s }
      - { store: minio-106, path: uptime-kuma/kuma.db, sync-interval: 5s }
      - { store: nas, path: uptime-kuma/kuma.db, sync-interval: 60s, retention: 7d, snapshot-interval: 24h }
LITEVISOR
      }

      resources {
        cpu    = 300
        memory = 512
      }
    }
  }
}
