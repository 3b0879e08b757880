# Sonarr under litevisor as a Nomad raw_exec task, the way radarr.nomad.hcl runs
# Radarr: the *arr apps ship one self-contained .NET build per platform
# (installed here under /opt/sonarr), so litevisor execs the binary directly
# (the linuxserver image's s6 /init would only stand between them).
#
# Sonarr's facts (Sonarr/Sonarr, src/NzbDrone.Common/Extensions/
# PathExtensions.cs, Datastore/ConnectionStringFactory.cs,
# Configuration/ConfigFileProvider.cs, Sonarr.Http/Ping/PingController.cs):
# sonarr.db and logs.db in the -data= directory, both in WAL mode (Truncate
# only on macOS); port 8989; GET /ping answers 200 once it can read its config
# table, 500 if not.
# logs.db is optional: Sonarr v4 can keep its log table out of SQLite
# (LogDbEnabled=false), and a first start has none yet.
#
# litevisor restores sonarr.db (and, optionally, logs.db) from the freshest of
# the two node MinIOs and the NAS, starts Sonarr, and replicates to the OTHER
# node's MinIO every 5 s and to the NAS every minute (7 days of history).
# The MinIO on the node the job runs on is a restore source only: the config
# names each store's node and litevisor skips the local one for replication.
#
# Stop budget: Nomad sends SIGTERM, waits kill_timeout (25 s, within the
# client's default max_kill_timeout of 30 s), then SIGKILLs. litevisor gives
# Sonarr stop-grace (15 s), then flushes for at most flush-timeout (7 s),
# and its replication threads get up to 2 s more to stop: 15 + 7 + 2 = 24 s,
# a second under 25 s. tests/test_jobs.py checks this arithmetic.
job "sonarr" {
  datacenters = ["homelab"]
  type        = "service"

  group "sonarr" {
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
        static = 8989
      }
      port "sup" {}
    }

    service {
      provider = "nomad"
      name     = "sonarr"
      port     = "http"
    }

    # litevisor's own endpoint: /readyz is 200 once the databases are restored
    # and Sonarr answers its /ping; replication trouble alone never fails it.
    service {
      provider = "nomad"
      name     = "sonarr-litevisor"
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

    task "sonarr" {
      driver       = "raw_exec"
      kill_signal  = "SIGTERM"
      kill_timeout = "25s"

      config {
        command = "/usr/local/bin/litevisor"
        args = ["run", "-config", "${NOMAD_TASK_DIR}/litevisor.yml", "--",
        "/opt/sonarr/Sonarr", "-nobrowser", "-data=/srv/sonarr"]
      }

      # MinIO credentials from Nomad Variables, written under secrets/.
      # litevisor re-reads the files when they change, so no restart is needed.
      template {
        destination = "${NOMAD_SECRETS_DIR}/s3_key"
        change_mode = "noop"
        data        = "{{ with nomadVar \"nomad/jobs/sonarr\" }}{{ .s3_key }}{{ end }}"
      }

      template {
        destination = "${NOMAD_SECRETS_DIR}/s3_secret"
        change_mode = "noop"
        data        = "{{ with nomadVar \"nomad/jobs/sonarr\" }}{{ .s3_secret }}{{ end }}"
      }

      # The API key Prowlarr, Jellyseerr and Maintainerr use to reach Sonarr
      # lives in config.xml, which is no database and is not replicated: set
      # from the same variable on both nodes, it survives a move. Changing it
      # restarts the task (env templates require change_mode "restart").
      # Sonarr v4 reads SONARR__AUTH__APIKEY over config.xml (its
      # ConfigFileProvider takes the key from AuthOptions first).
      template {
        destination = "${NOMAD_SECRETS_DIR}/api.env"
        env         = true
        change_mode = "restart"
        data        = "{{ with nomadVar \"nomad/jobs/sonarr\" }}SONARR__AUTH__APIKEY={{ .api_key | toJSON }}{{ end }}"
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
  # /srv/sonarr persists on each node: when the job comes back to a node that
  # another node moved ahead, the old sonarr.db is moved aside, not deleted.
  # Keep the newest three such copies.
  keep-replaced: 3

supervisor:
  stop-grace: 15s
  flush-timeout: 7s

health:
  probe-url: http://127.0.0.1:8989/ping

dbs:
  - path: /srv/sonarr/sonarr.db
    replicas:
      - { store: minio-105, path: sonarr/sonarr.db, sync-interval: 5s }
      - { store: minio-106, path: sonarr/sonarr.db, sync-interval: 5s }
      - { store: nas, path: sonarr/sonarr.db, sync-interval: 60s, retention: 7d, snapshot-interval: 24h }
  - path: /srv/sonarr/logs.db
    optional: true
    replicas:
      - { store: minio-105, path: sonarr/logs.db, sync-interval: 5s }
      - { store: minio-106, path: sonarr/logs.db, sync-interval: 5s }
      - { store: nas, path: sonarr/logs.db, sync-interval: 60s, retention: 7d, snapshot-interval: 24h }
LITEVISOR
      }

      resources {
        cpu    = 500
        memory = 512
      }
    }
  }
}
