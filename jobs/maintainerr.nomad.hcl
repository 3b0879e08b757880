# Maintainerr under litevisor as a Nomad raw_exec task, from a source build.
#
# Why not Docker: Maintainerr is normally run from its image
# (ghcr.io/maintainerr/maintainerr), but that image is node:24-alpine, built
# on musl, and litevisor is a glibc binary (built and tested on Debian 12),
# so it cannot be dropped into the image as jobs/vaultwarden.Dockerfile does.
# Maintainerr is built on the host by the steps of its Dockerfile (yarn
# install, yarn turbo build, apps/ui/dist copied to apps/server/dist/ui),
# under /opt/maintainerr, with Node.js 24 (its image's base) at /usr/bin.
# Its production config hard-codes two paths: the migrations under
# /opt/app/apps/server/dist/database/migrations and the log directory
# /opt/data/logs (whatever DATA_DIR says), so /opt/app is a symlink to
# /opt/maintainerr and the data directory is /opt/data, as in the image.
# The image's start.sh runs "npm run --prefix /opt/app/apps/server start",
# i.e. "node dist/main" in apps/server (TypeORM globs its subscribers from the
# working directory); raw_exec has no working-directory option, hence the sh
# that cds and execs node: node is still litevisor's direct child.
#
# Maintainerr's facts (Maintainerr/Maintainerr: apps/server/src/app/config/
# dataDir.ts, typeOrmConfig.ts, health.controller.ts, Dockerfile): one SQLite
# database, maintainerr.sqlite in DATA_DIR (default /opt/data), opened with
# better-sqlite3; port 6246 (UI_PORT). TypeORM is not asked for WAL there
# (no enableWAL), so the file starts in rollback-journal mode; litevisor
# switches it to WAL when it starts replicating it, and the mode is kept in
# the file (docs/replication.md). Health: GET /api/health/ready runs SELECT 1
# and answers 503 when the database is unreachable. It is recent (on
# Maintainerr/Maintainerr's main branch; we could not tell which release
# brought it): on a release without it, drop probe-url rather than point it
# at /api/app/status, which asks GitHub for the latest release.
#
# litevisor restores maintainerr.sqlite from the freshest of the two node
# MinIOs and the NAS, starts Maintainerr, and replicates to the OTHER node's
# MinIO every 5 s and to the NAS every minute (7 days of history). The MinIO
# on the node the job runs on is a restore source only.
#
# Stop budget: Nomad sends SIGTERM, waits kill_timeout (25 s, within the
# client's default max_kill_timeout of 30 s), then SIGKILLs. litevisor gives
# Maintainerr stop-grace (15 s), then flushes for at most flush-timeout (7 s),
# and its replication threads get up to 2 s more to stop: 15 + 7 + 2 = 24 s,
# a second under 25 s. tests/test_jobs.py checks this arithmetic.
job "maintainerr" {
  datacenters = ["homelab"]
  type        = "service"

  group "maintainerr" {
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
        static = 6246
      }
      port "sup" {}
    }

    service {
      provider = "nomad"
      name     = "maintainerr"
      port     = "http"
    }

    # litevisor's own endpoint: /readyz is 200 once the database is restored
    # and Maintainerr answers /api/health/ready; replication trouble alone
    # never fails it.
    service {
      provider = "nomad"
      name     = "maintainerr-litevisor"
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

    task "maintainerr" {
      driver       = "raw_exec"
      kill_signal  = "SIGTERM"
      kill_timeout = "25s"

      config {
        command = "/usr/local/bin/litevisor"
        args = ["run", "-config", "${NOMAD_TASK_DIR}/litevisor.yml", "--",
        "/bin/sh", "-c", "cd /opt/app/apps/server && exec /usr/bin/node dist/main"]
      }

      env {
        NODE_ENV    = "production"
        DATA_DIR    = "/opt/data"
        UI_PORT     = "6246"
        UI_HOSTNAME = "0.0.0.0"
      }

      # MinIO credentials from Nomad Variables, written under secrets/.
      # litevisor re-reads the files when they change, so no restart is needed.
      template {
        destination = "${NOMAD_SECRETS_DIR}/s3_key"
        change_mode = "noop"
        data        = "{{ with nomadVar \"nomad/jobs/maintainerr\" }}{{ .s3_key }}{{ end }}"
      }

      template {
        destination = "${NOMAD_SECRETS_DIR}/s3_secret"
        change_mode = "noop"
        data        = "{{ with nomadVar \"nomad/jobs/maintainerr\" }}{{ .s3_secret }}{{ end }}"
      }

      template {
        destination = "${NOMAD_TASK_DIR}/litevisor.yml"
        change_mode = "restart"
        data        = <<LITEVISOR
node: {{ env "node.unique.name" }}
addr: "0.0.0.0:${NOMAD_PORT_sup}"
logging:
  level: info

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
  # /opt/data persists on each node: when the job comes back to a node that
  # another node moved ahead, the old maintainerr.sqlite is moved aside, not
  # deleted.
  # Keep the newest three such copies.
  keep-replaced: 3

supervisor:
  stop-grace: 15s
  flush-timeout: 7s

health:
  probe-url: http://127.0.0.1:6246/api/health/ready

dbs:
  - path: /opt/data/maintainerr.sqlite
    replicas:
      - { store: minio-105, path: maintainerr/maintainerr.sqlite, sync-interval: 5s }
      - { store: minio-106, path: maintainerr/maintainerr.sqlite, sync-interval: 5s }
      - { store: nas, path: maintainerr/maintainerr.sqlite, sync-interval: 60s, retention: 7d, snapshot-interval: 24h }
LITEVISOR
      }

      resources {
        cpu    = 300
        memory = 512
      }
    }
  }
}
