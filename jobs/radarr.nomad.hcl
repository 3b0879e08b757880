# Radarr under litevisor as a Nomad raw_exec task.
#
# litevisor restores radarr.db (and, optionally, logs.db) from the freshest of
# the two node MinIOs and the NAS, starts Radarr, and replicates to the OTHER
# node's MinIO every 5 s and to the NAS every minute (7 days of history).
# The MinIO on the node the job runs on is a restore source only: the config
# names each store's node and litevisor skips the local one for replication.
#
# Radarr's facts (Radarr/Radarr, src/NzbDrone.Common/Extensions/
# PathExtensions.cs, Datastore/ConnectionStringFactory.cs,
# Radarr.Http/Ping/PingController.cs), as for Sonarr, from which it forked:
# radarr.db and logs.db in the -data= directory, both in WAL mode; port 7878;
# GET /ping answers 200 once it can read its config table.
#
# Stop budget: Nomad sends SIGTERM, waits kill_timeout (25 s, within the
# client's default max_kill_timeout of 30 s), then SIGKILLs. litevisor gives
# Radarr stop-grace (15 s), then flushes for at most flush-timeout (7 s),
# and its replication threads get up to 2 s more to stop: 15 + 7 + 2 = 24 s,
# a second under 25 s. tests/test_jobs.py checks this arithmetic.
job "radarr" {
  datacenters = ["homelab"]
  type        = "service"

  group "radarr" {
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
        static = 7878
      }
      port "sup" {}
    }

    service {
      provider = "nomad"
      name     = "radarr"
      port     = "http"
    }

    # litevisor's own endpoint: /readyz is 200 once the databases are restored
    # and Radarr answers its /ping; replication trouble alone never fails it.
    service {
      provider = "nomad"
      name     = "radarr-litevisor"
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

    task "radarr" {
      driver       = "raw_exec"
      kill_signal  = "SIGTERM"
      kill_timeout = "25s"

      config {
        command = "/usr/local/bin/litevisor"
        args = ["run", "-config", "${NOMAD_TASK_DIR}/litevisor.yml", "--",
        "/opt/radarr/Radarr", "-nobrowser", "-data=/srv/radarr"]
      }

      # MinIO credentials from Nomad Variables, written under secrets/.
      # litevisor re-reads the files when they change, so no restart is needed.
      template {
        destination = "${NOMAD_SECRETS_DIR}/s3_key"
        change_mode = "noop"
        data        = "{{ with nomadVar \"nomad/jobs/radarr\" }}{{ .s3_key }}{{ end }}"
      }

      template {
        destination = "${NOMAD_SECRETS_DIR}/s3_secret"
        change_mode = "noop"
        data        = "{{ with nomadVar \"nomad/jobs/radarr\" }}{{ .s3_secret }}{{ end }}"
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
  # /srv/radarr persists on each node: when the job comes back to a node that
  # another node moved ahead, the old radarr.db is moved aside, not deleted.
  # Keep the newest three such copies.
  keep-replaced: 3

supervisor:
  stop-grace: 15s
  flush-timeout: 7s

health:
  probe-url: http://127.0.0.1:7878/ping

dbs:
  - path: /srv/radarr/radarr.db
    replicas:
      - { store: minio-105, path: radarr/radarr.db, sync-interval: 5s }
      - { store: minio-106, path: radarr/radarr.db, sync-interval: 5s }
      - { store: nas, path: radarr/radarr.db, sync-interval: 60s, retention: 7d, snapshot-interval: 24h }
  - path: /srv/radarr/logs.db
    optional: true
    replicas:
      - { store: minio-105, path: radarr/logs.db, sync-interval: 5s }
      - { store: minio-106, path: radarr/logs.db, sync-interval: 5s }
      - { store: nas, path: radarr/logs.db, sync-interval: 60s, retention: 7d, snapshot-interval: 24h }
LITEVISOR
      }

      resources {
        cpu    = 500
        memory = 512
      }
    }
  }
}
