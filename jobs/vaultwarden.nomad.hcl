# Vaultwarden in Docker with litevisor as the ENTRYPOINT (PID 1).
#
# The image adds /usr/local/bin/litevisor (jobs/vaultwarden.Dockerfile).
# litevisor restores db.sqlite3 as a single checkpointed file (no stale -wal,
# vaultwarden #4418), runs vaultwarden as PID 1's child, forwards SIGUSR1
# (vaultwarden's backup trigger), reaps zombies, and flushes on stop.
#
# Vaultwarden's facts (dani-garcia/vaultwarden: src/config.rs, src/main.rs,
# src/api/web.rs, docker/Dockerfile): one SQLite database, DATA_FOLDER/db.sqlite3
# (/data in the image) unless DATABASE_URL names another, which litevisor sets
# here (dbs[].env); WAL mode; the image listens on port 80 (ROCKET_PORT) and
# answers GET /alive once it serves.
#
# Stop budget: docker stop with kill_timeout 20 s: stop-grace 10 s + flush 6 s
# + up to 2 s for the replication threads = 18 s.
job "vaultwarden" {
  datacenters = ["homelab"]
  type        = "service"

  group "vaultwarden" {
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
        to = 80
      }
      port "sup" {
        to = 9090
      }
    }

    service {
      provider = "nomad"
      name     = "vaultwarden-litevisor"
      port     = "sup"

      check {
        type     = "http"
        path     = "/readyz"
        interval = "10s"
        timeout  = "2s"

        # a restore of a large vault from the NAS may take a while before the
        # first /readyz 200
        check_restart {
          limit = 3
          grace = "120s"
        }
      }
    }

    task "vaultwarden" {
      driver       = "docker"
      kill_signal  = "SIGTERM"
      kill_timeout = "20s"

      config {
        image      = "registry.local/vaultwarden-litevisor:1.32"
        ports      = ["http", "sup"]
        entrypoint = ["/usr/local/bin/litevisor"]
        args       = ["run", "-config", "/local/litevisor.yml", "--", "/start.sh"]
      }

      # MinIO credentials from Nomad Variables, written under secrets/
      # (/secrets in the container, $NOMAD_SECRETS_DIR), not into the task's
      # environment, which vaultwarden would inherit. litevisor re-reads the
      # files when they change, so no restart is needed.
      template {
        destination = "secrets/s3_key"
        change_mode = "noop"
        data        = "{{ with nomadVar \"nomad/jobs/vaultwarden\" }}{{ .s3_key }}{{ end }}"
      }

      template {
        destination = "secrets/s3_secret"
        change_mode = "noop"
        data        = "{{ with nomadVar \"nomad/jobs/vaultwarden\" }}{{ .s3_secret }}{{ end }}"
      }

      template {
        destination = "local/litevisor.yml"
        change_mode = "restart"
        data        = <<LITEVISOR
node: {{ env "node.unique.name" }}
addr: ":9090"
access-key-id-file: ${NOMAD_SECRETS_DIR}/s3_key
secret-access-key-file: ${NOMAD_SECRETS_DIR}/s3_secret
stores:
  minio-105: { type: s3, endpoint: "http://10.99.1.105:9100", bucket: litevisor, node: node-105 }
  minio-106: { type: s3, endpoint: "http://10.99.1.106:9100", bucket: litevisor, node: node-106 }
  nas: { type: s3, endpoint: "http://10.0.0.200:9000", bucket: backups }
supervisor:
  stop-grace: 10s
  flush-timeout: 6s
health:
  probe-url: http://127.0.0.1:80/alive
dbs:
  - path: /data/db.sqlite3
    env: DATABASE_URL
    replicas:
      - { store: minio-105, path: vaultwarden/db.sqlite3, sync-interval: 5s }
      - { store: minio-106, path: vaultwarden/db.sqlite3, sync-interval: 5s }
      - { store: nas, path: vaultwarden/db.sqlite3, sync-interval: 60s, retention: 7d, snapshot-interval: 24h }
LITEVISOR
      }

      resources {
        cpu    = 300
        memory = 256
      }
    }
  }
}
