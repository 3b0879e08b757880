# Jellyseerr under litevisor as a Nomad raw_exec task, from a source build.
#
# Why not Docker: Jellyseerr is normally run from its image
# (fallenbagel/jellyseerr), but that image is node:22-alpine, built on musl,
# and litevisor is a glibc binary (built and tested on Debian 12), so it
# cannot be dropped into the image as jobs/vaultwarden.Dockerfile does.
# Jellyseerr is built from source on the host instead, by its package.json
# scripts: checked out under /opt/jellyseerr, "pnpm install && pnpm build"
# there, with Node.js 22 and pnpm 9 (its "engines") at /usr/bin.
# Its "start" script is "NODE_ENV=production node dist/index.js", run from
# that directory (Next.js finds .next/ in the working directory, and raw_exec
# has no working-directory option), hence the sh that cds and execs node:
# node is still litevisor's direct child and gets its signals.
#
# Jellyseerr's facts (Fallenbagel/jellyseerr: server/datasource.ts,
# server/index.ts, server/routes/index.ts, Dockerfile): one SQLite database,
# db/db.sqlite3 under CONFIG_DIRECTORY (default ./config), opened by TypeORM
# with enableWAL: true; port 5055 (PORT). Jellyseerr has since merged into
# Seerr (seerr-team/seerr, ghcr.io/seerr-team/seerr), whose datasource.ts
# keeps the same file and WAL; this job fits it as it is.
# Health: /api/v1/status, which compose healthchecks usually poll, asks the
# GitHub API whether an update is out, so a slow or unreachable GitHub would
# fail the 2 s probe; /api/v1/settings/public answers 200 from the settings
# in memory, and like every route only once the database is initialised and
# migrated (server/index.ts listens last).
#
# CONFIG_DIRECTORY also holds settings.json (the Jellyfin/Plex link, API keys,
# "initialized"): it is no database and litevisor does not replicate it.
# /srv/jellyseerr persists on each node; keep settings.json the same on both
# (copy it after changing settings) or a move lands on the setup wizard.
#
# litevisor restores db.sqlite3 from the freshest of the two node MinIOs and
# the NAS, starts Jellyseerr, and replicates to the OTHER node's MinIO every
# 5 s and to the NAS every minute (7 days of history). The MinIO on the node
# the job runs on is a restore source only.
#
# Stop budget: Nomad sends SIGTERM, waits kill_timeout (25 s, within the
# client's default max_kill_timeout of 30 s), then SIGKILLs. litevisor gives
# Jellyseerr stop-grace (15 s), then flushes for at most flush-timeout (7 s),
# and its replication threads get up to 2 s more to stop: 15 + 7 + 2 = 24 s,
# a second under 25 s. tests/test_jobs.py checks this arithmetic.
job "jellyseerr" {
  datacenters = ["homelab"]
  type        = "service"

  group "jellyseerr" {
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
        static = 5055
      }
      port "sup" {}
    }

    service {
      provider = "nomad"
      name     = "jellyseerr"
      port     = "http"
    }

    # litevisor's own endpoint: /readyz is 200 once the database is restored
    # and Jellyseerr answers /api/v1/settings/public; replication trouble
    # alone never fails it.
    service {
      provider = "nomad"
      name     = "jellyseerr-litevisor"
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

    task "jellyseerr" {
      driver       = "raw_exec"
      kill_signal  = "SIGTERM"
      kill_timeout = "25s"

      config {
        command = "/usr/local/bin/litevisor"
        args = ["run", "-config", "${NOMAD_TASK_DIR}/litevisor.yml", "--",
        "/bin/sh", "-c", "cd /opt/jellyseerr && exec /usr/bin/node dist/index.js"]
      }

      env {
        NODE_ENV         = "production"
        CONFIG_DIRECTORY = "/srv/jellyseerr"
        PORT             = "5055"
      }

      # MinIO credentials from Nomad Variables, written under secrets/.
      # litevisor re-reads the files when they change, so no restart is needed.
      template {
        destination = "${NOMAD_SECRETS_DIR}/s3_key"
        change_mode = "noop"
        data        = "{{ with nomadVar \"nomad/jobs/jellyseerr\" }}{{ .s3_key }}{{ end }}"
      }

      template {
        destination = "${NOMAD_SECRETS_DIR}/s3_secret"
        change_mode = "noop"
        data        = "{{ with nomadVar \"nomad/jobs/jellyseerr\" }}{{ .s3_secret }}{{ end }}"
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
  # /srv/jellyseerr persists on each node: when the job comes back to a node that
  # another node moved ahead, the old db.sqlite3 is moved aside, not deleted.
  # Keep the newest three such copies.
  keep-replaced: 3

supervisor:
  stop-grace: 15s
  flush-timeout: 7s

health:
  probe-url: http://127.0.0.1:5055/api/v1/settings/public

dbs:
  - path: /srv/jellyseerr/db/db.sqlite3
    replicas:
      - { store: minio-105, path: jellyseerr/db.sqlite3, sync-interval: 5s }
      - { store: minio-106, path: jellyseerr/db.sqlite3, sync-interval: 5s }
      - { store: nas, path: jellyseerr/db.sqlite3, sync-interval: 60s, retention: 7d, snapshot-interval: 24h }
LITEVISOR
      }

      resources {
        cpu    = 300
        memory = 768
      }
    }
  }
}
