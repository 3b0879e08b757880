/* test_config.c — config_load: good files parsed to the right values, bad files to exact errors. */
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/config.h"
#include "common/config_int.h"
#include "common/config_walk.h"
#include "tests/unit/unit.h"

static struct config load_ok(const char *yaml)
{
	struct config cfg;
	char err[1024];
	if (config_load_string(yaml, "t.yml", NULL, &cfg, err, sizeof(err)) != 0)
		FAIL("config did not load: %s", err);
	return cfg;
}

/* A full Litestream v0.3 litestream.yml, as its documentation writes it. */
TEST(litestream_full_example)
{
	struct config c = load_ok(
		"addr: \":9090\"\n"
		"exec: \"myapp -serve\"\n"
		"access-key-id: AKIATOPLEVEL\n"
		"secret-access-key: topsecret\n"
		"logging:\n"
		"  level: debug\n"
		"  type: json\n"
		"  stderr: true\n"
		"dbs:\n"
		"  - path: /var/lib/app/app.db\n"
		"    meta-path: /var/lib/app/meta\n"
		"    monitor-interval: 500ms\n"
		"    checkpoint-interval: 30s\n"
		"    min-checkpoint-page-count: 500\n"
		"    max-checkpoint-page-count: 0\n"
		"    replicas:\n"
		"      - url: s3://mybkt/app\n"
		"        sync-interval: 10s\n"
		"        snapshot-interval: 6h\n"
		"        retention: 30m\n"
		"        validation-interval: 0\n"
		"      - name: minio\n"
		"        type: s3\n"
		"        bucket: mybkt\n"
		"        path: /backup/app/\n"
		"        endpoint: http://10.0.0.5:9000\n"
		"        access-key-id: AKIAOWN\n"
		"        skip-verify: true\n"
		"        retention: 72h\n"
		"        retention-check-interval: 2h\n"
		"        writer-check-interval: 0\n"
		"      - type: file\n"
		"        path: /mnt/backup/app\n"
		"  - path: /var/lib/app/other.db\n");
	CHECK_STR(c.addr, ":9090");
	CHECK_STR(c.exec, "myapp -serve");
	CHECK_INT(c.log_level, LOG_DEBUG);
	CHECK(c.log_json);
	CHECK_INT(c.ndbs, 2);
	struct cfg_db *d = &c.dbs[0];
	CHECK_STR(d->path, "/var/lib/app/app.db");
	CHECK_STR(d->meta_path, "/var/lib/app/meta");
	CHECK_STR(d->name, "app.db");
	CHECK_STR(d->env, "LITEVISOR_DB_APP_DB");
	CHECK_INT(d->monitor_interval_ms, 500);
	CHECK_INT(d->checkpoint_interval_ms, 30000);
	CHECK_INT(d->min_checkpoint_page_count, 500);
	CHECK_INT(d->max_checkpoint_page_count, 0);
	CHECK_INT(d->nreplicas, 3);

	struct cfg_replica *r = &d->replicas[0];
	CHECK_STR(r->name, "s3");
	CHECK_INT(r->type, REPLICA_S3);
	CHECK_STR(r->url, "s3://mybkt/app");
	CHECK_STR(r->bucket, "mybkt");
	CHECK_STR(r->path, "app");
	CHECK(r->endpoint == NULL);
	CHECK_STR(r->region, "us-east-1");
	CHECK(!r->force_path_style);
	CHECK_STR(r->access_key_id.value, "AKIATOPLEVEL");
	CHECK_STR(r->secret_access_key.value, "topsecret");
	CHECK_INT(r->sync_interval_ms, 10000);
	CHECK_INT(r->snapshot_interval_ms, 6 * 3600 * 1000LL);
	CHECK_INT(r->retention_ms, 30 * 60 * 1000LL);
	CHECK_INT(r->retention_check_interval_ms, 30 * 60 * 1000LL); /* capped at retention */
	CHECK_INT(r->retention_grace_ms, 3600 * 1000LL);
	CHECK_INT(r->writer_check_interval_ms, 60 * 1000LL);
	CHECK(!r->restore_only);

	r = &d->replicas[1];
	CHECK_STR(r->name, "minio");
	CHECK_STR(r->path, "backup/app");
	CHECK_STR(r->endpoint, "http://10.0.0.5:9000");
	CHECK(r->force_path_style); /* an endpoint means a non-AWS store */
	CHECK_STR(r->region, "us-east-1");
	CHECK(r->skip_verify);
	CHECK_STR(r->access_key_id.value, "AKIAOWN");        /* own value kept */
	CHECK_STR(r->secret_access_key.value, "topsecret");  /* missing one copied */
	CHECK_INT(r->retention_check_interval_ms, 2 * 3600 * 1000LL);
	CHECK_INT(r->writer_check_interval_ms, 0);

	r = &d->replicas[2];
	CHECK_STR(r->name, "file");
	CHECK_INT(r->type, REPLICA_FILE);
	CHECK_STR(r->path, "/mnt/backup/app");
	CHECK(r->access_key_id.value == NULL); /* credentials are for s3 only */

	d = &c.dbs[1];
	CHECK_STR(d->meta_path, "/var/lib/app/.other.db-litevisor");
	CHECK_INT(d->nreplicas, 0);
	config_release(&c);
	CHECK(c.dbs == NULL && c.ndbs == 0);
}

/* The seed topology, seen from node-105: its own MinIO is a restore source only. */
TEST(seed_topology_from_node_105)
{
	struct config c;
	char err[1024];
	if (config_load("config/good/seed-topology.yml", NULL, &c, err, sizeof(err)) != 0)
		FAIL("%s", err);
	CHECK_STR(c.file, "config/good/seed-topology.yml");
	CHECK_STR(c.node, "node-105");
	CHECK_INT(c.ndbs, 2);
	for (size_t i = 0; i < c.ndbs; i++) {
		const struct cfg_db *d = &c.dbs[i];
		const char *base = i == 0 ? "radarr.db" : "logs.db";
		char want[128];
		CHECK_INT(d->nreplicas, 3);
		const struct cfg_replica *m5 = &d->replicas[0], *m6 = &d->replicas[1], *nas = &d->replicas[2];
		CHECK_STR(m5->name, "minio-105");
		CHECK_STR(m5->store, "minio-105");
		CHECK_STR(m5->node, "node-105");
		CHECK(m5->restore_only);
		CHECK_STR(m5->endpoint, "http://localhost:9000");
		CHECK_STR(m5->bucket, "litevisor");
		snprintf(want, sizeof(want), "radarr/%s", base);
		CHECK_STR(m5->path, want);
		CHECK_STR(m5->access_key_id.value, "minioadmin");

		CHECK_STR(m6->name, "minio-106");
		CHECK_STR(m6->node, "node-106");
		CHECK(!m6->restore_only);
		CHECK_STR(m6->endpoint, "http://10.0.0.106:9000");
		CHECK(m6->force_path_style);
		CHECK_STR(m6->path, want);

		CHECK_STR(nas->name, "nas");
		CHECK_INT(nas->type, REPLICA_FILE);
		CHECK(nas->node == NULL);
		CHECK(!nas->restore_only);
		snprintf(want, sizeof(want), "/mnt/nas/litevisor/radarr/%s", base);
		CHECK_STR(nas->path, want);
	}
	config_release(&c);
}

/* The same file read on node-106 flips which replica is restore-only. */
TEST(node_rule_follows_top_level_node)
{
	struct config c = load_ok(
		"node: node-106\n"
		"stores:\n"
		"  minio-106: {url: \"s3://b.localhost:9000/x\", node: node-106}\n"
		"dbs:\n"
		"  - path: /d/a.db\n"
		"    replicas:\n"
		"      - {store: minio-106, path: a}\n"
		"      - {url: \"s3://b.localhost:9001/x\", node: node-106, name: own-node}\n"
		"      - {url: \"s3://b.localhost:9002/x\", node: node-107, name: other}\n"
		"      - {url: \"s3://b.localhost:9003/x\", restore-only: true, name: marked}\n");
	CHECK(c.dbs[0].replicas[0].restore_only);
	CHECK_STR(c.dbs[0].replicas[0].path, "x/a");
	CHECK(c.dbs[0].replicas[1].restore_only);
	CHECK(!c.dbs[0].replicas[2].restore_only);
	CHECK(c.dbs[0].replicas[3].restore_only);
	config_release(&c);

	/* A replica's path is always below its store's, however the slashes fall. */
	c = load_ok("stores:\n"
		    "  nas: {path: /mnt/nas/}\n"
		    "  root: {url: \"file:///\"}\n"
		    "dbs:\n"
		    "  - path: /d/a.db\n"
		    "    replicas:\n"
		    "      - {store: nas, path: /a/}\n"
		    "      - {store: root, path: b}\n");
	CHECK_STR(c.dbs[0].replicas[0].path, "/mnt/nas/a");
	CHECK_STR(c.dbs[0].replicas[1].path, "/b");
	config_release(&c);
}

/* A replica may override what its store sets, and a store's credentials come along. */
TEST(store_inheritance_and_overrides)
{
	/* a CA file is checked at load: readable, and PEM */
	char ca[] = "/tmp/litevisor-unit-ca-XXXXXX", yaml[1024];
	int fd = mkstemp(ca);
	CHECK(fd >= 0);
	static const char pem[] = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
	CHECK(write(fd, pem, sizeof(pem) - 1) == (ssize_t)(sizeof(pem) - 1));
	close(fd);
	/* a secret file of its own: the machine's files are not the test's to assume */
	char sak[] = "/tmp/litevisor-unit-sak-XXXXXX";
	fd = mkstemp(sak);
	CHECK(fd >= 0);
	CHECK(write(fd, "s3cret\n", 7) == 7);
	close(fd);
	snprintf(yaml, sizeof(yaml),
		"stores:\n"
		"  s:\n"
		"    type: s3\n"
		"    bucket: bkt\n"
		"    endpoint: minio.lan:9000\n"
		"    region: eu-west-1\n"
		"    ca-file: %s\n"
		"    connect-timeout: 3s\n"
		"    idle-timeout: 2s\n"
		"    access-key-id: AK\n"
		"    secret-access-key-file: %s\n"
		"    session-token: TOK\n"
		"dbs:\n"
		"  - path: /d/a.db\n"
		"    replicas:\n"
		"      - store: s\n"
		"      - store: s\n"
		"        name: s-fast\n"
		"        path: fast\n"
		"        region: eu-central-1\n"
		"        secret-access-key: inline\n"
		"        sync-interval: 100ms\n", ca, sak);
	struct config c = load_ok(yaml);
	unlink(ca);
	unlink(sak);
	const struct cfg_replica *a = &c.dbs[0].replicas[0], *b = &c.dbs[0].replicas[1];
	CHECK_STR(a->name, "s");
	CHECK_STR(a->path, "");
	CHECK_STR(a->endpoint, "https://minio.lan:9000");
	CHECK(a->force_path_style);
	CHECK_STR(a->region, "eu-west-1");
	CHECK_STR(a->ca_file, ca);
	CHECK_INT(a->connect_timeout_ms, 3000);
	CHECK_INT(a->idle_timeout_ms, 2000);
	CHECK_STR(a->access_key_id.value, "AK");
	CHECK_STR(a->secret_access_key.file, sak);
	CHECK(a->secret_access_key.value == NULL);
	CHECK_STR(a->session_token.value, "TOK");
	CHECK_STR(b->name, "s-fast");
	CHECK_STR(b->path, "fast");
	CHECK_STR(b->region, "eu-central-1");
	CHECK_STR(b->secret_access_key.value, "inline");
	CHECK(b->secret_access_key.file == NULL); /* the pair is overridden as a whole */
	CHECK_INT(b->sync_interval_ms, 100);
	config_release(&c);
}

struct url_case {
	const char *url;
	enum replica_type type;
	const char *bucket, *path, *endpoint, *region;
	bool fps;
};

TEST(url_shortcuts)
{
	static const struct url_case cases[] = {
		{ "s3://bkt/a/b", REPLICA_S3, "bkt", "a/b", NULL, "us-east-1", false },
		{ "s3://bkt", REPLICA_S3, "bkt", "", NULL, "us-east-1", false },
		{ "s3://bkt//a//b/", REPLICA_S3, "bkt", "a/b", NULL, "us-east-1", false },
		{ "s3://my.bucket.example.com/p", REPLICA_S3, "my.bucket.example.com", "p", NULL, "us-east-1", false },
		{ "s3://bkt.localhost:9000/p", REPLICA_S3, "bkt", "p", "http://localhost:9000", "us-east-1", true },
		{ "s3://bkt.localhost/p", REPLICA_S3, "bkt", "p", "http://localhost", "us-east-1", true },
		{ "s3://bkt.s3.us-west-002.backblazeb2.com/p", REPLICA_S3, "bkt", "p",
		  "https://s3.us-west-002.backblazeb2.com", "us-west-002", true },
		{ "s3://bkt.s3.filebase.com/p", REPLICA_S3, "bkt", "p", "https://s3.filebase.com", "us-east-1", true },
		{ "s3://bkt.nyc3.digitaloceanspaces.com/p", REPLICA_S3, "bkt", "p",
		  "https://nyc3.digitaloceanspaces.com", "nyc3", true },
		{ "s3://bkt.s3.fr-par.scw.cloud/p", REPLICA_S3, "bkt", "p", "https://s3.fr-par.scw.cloud", "fr-par", true },
		{ "s3://bkt.us-east-1.linodeobjects.com/p", REPLICA_S3, "bkt", "p",
		  "https://us-east-1.linodeobjects.com", "us-east-1", true },
		{ "file:///var/backup/app/", REPLICA_FILE, NULL, "/var/backup/app", NULL, NULL, false },
		{ "/var/backup/app", REPLICA_FILE, NULL, "/var/backup/app", NULL, NULL, false },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct url_case *u = &cases[i];
		struct cfg_replica r;
		char err[256];
		if (config_replica_from_url(u->url, &r, err, sizeof(err)) != 0)
			FAIL("%s: %s", u->url, err);
		fprintf(stderr, "%s\n", u->url);
		CHECK_INT(r.type, u->type);
		CHECK_STR(r.url, u->url);
		CHECK_STR(r.path, u->path);
		CHECK_STR(r.name, u->type == REPLICA_S3 ? "s3" : "file");
		if (u->bucket)
			CHECK_STR(r.bucket, u->bucket);
		else
			CHECK(r.bucket == NULL);
		if (u->endpoint)
			CHECK_STR(r.endpoint, u->endpoint);
		else
			CHECK(r.endpoint == NULL);
		if (u->region)
			CHECK_STR(r.region, u->region);
		CHECK_INT(r.force_path_style, u->fps);
		CHECK_INT(r.sync_interval_ms, 1000);
		config_replica_release(&r);
	}
	static const char *const bad[] = { "gcs://b/p", "s3://", "ftp://x/y", "relative/dir", "file://a:80/p",
					   "s3://localhost:9000/p", "s3://user@bkt/p" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct cfg_replica r;
		char err[256] = "";
		if (config_replica_from_url(bad[i], &r, err, sizeof(err)) == 0)
			FAIL("%s was accepted", bad[i]);
		CHECK(err[0] != '\0');
	}
}

/* In a config, explicit keys win over what a URL shortcut implies (as in Litestream). */
TEST(url_parts_versus_explicit_keys)
{
	struct config c = load_ok(
		"dbs:\n"
		"  - path: /d/a.db\n"
		"    replicas:\n"
		"      - url: s3://bkt.localhost:9000/p/\n"
		"        region: eu-west-1\n"
		"        name: a\n"
		"      - url: s3://bkt.s3.filebase.com/q\n"
		"        endpoint: http://127.0.0.1:9000/\n"
		"        name: b\n"
		"      - type: s3\n"
		"        bucket: bkt\n"
		"        path: r\n"
		"        endpoint: http://127.0.0.1:9000\n"
		"        force-path-style: false\n"
		"        name: c\n"
		"      - url: file:///var/backups/a/\n"
		"        type: s3\n"
		"      - url: s3://bkt.localhost:9000/q\n"
		"        force-path-style: false\n"
		"        name: e\n");
	const struct cfg_replica *r = c.dbs[0].replicas;
	CHECK_STR(r[0].endpoint, "http://localhost:9000");
	CHECK_STR(r[0].region, "eu-west-1");
	CHECK_STR(r[0].path, "p");
	CHECK(r[0].force_path_style);
	CHECK_STR(r[1].endpoint, "http://127.0.0.1:9000");
	CHECK_STR(r[1].bucket, "bkt");
	CHECK_STR(r[1].region, "us-east-1");
	CHECK(!r[2].force_path_style); /* explicit false wins over "endpoint means path style" */
	CHECK_INT(r[3].type, REPLICA_FILE); /* the url's scheme wins over type, as Litestream */
	CHECK_STR(r[3].path, "/var/backups/a");
	CHECK_STR(r[3].name, "file");
	CHECK(r[4].force_path_style); /* a shortcut's path-style holds, as in Litestream (QA57 D4) */
	config_release(&c);
}

TEST(defaults_match_config_h)
{
	struct config c = load_ok("dbs:\n  - path: /d/app.db\n    replicas:\n      - url: s3://b/p\n");
	CHECK(c.addr == NULL && c.exec == NULL && c.node == NULL);
	CHECK_INT(c.log_level, LOG_INFO);
	CHECK(!c.log_json);
	CHECK_INT(c.restore.probe_timeout_ms, 1000);
	CHECK_INT(c.restore.mode, RESTORE_FRESHEST_REACHABLE);
	CHECK_INT(c.restore.wait_timeout_ms, 30000);
	CHECK(!c.restore.allow_empty_unreachable);
	CHECK_INT(c.restore.existing, EXISTING_NEWEST_WINS);
	CHECK_INT(c.restore.verify, VERIFY_QUICK);
	CHECK_INT(c.restore.parallelism, 8);
	CHECK_INT(c.restore.clock_skew_ms, 10000);
	CHECK_INT(c.restore.handover_wait_ms, 20000);
	CHECK_INT(c.restore.keep_replaced, 0);
	CHECK_INT(c.supervisor.stop_grace_ms, 10000);
	CHECK_INT(c.supervisor.flush_timeout_ms, 5000);
	CHECK(!c.supervisor.new_process_group);
	CHECK_INT(c.supervisor.restart, RESTART_NEVER);
	CHECK_INT(c.supervisor.restart_limit, 5);
	CHECK_INT(c.supervisor.restart_delay_ms, 1000);
	CHECK_INT(c.supervisor.restart_delay_max_ms, 60000);
	CHECK_INT(c.health.probe_interval_ms, 5000);
	CHECK_INT(c.health.probe_timeout_ms, 2000);
	CHECK_INT(c.health.fail_after_ms, 0);
	CHECK_INT(c.health.push_interval_ms, 60000);
	CHECK(!c.consul.addr && !c.consul.service_name && !c.consul.lock_key);
	CHECK_INT(c.consul.timeout_ms, 5000);
	CHECK_INT(c.consul.check_ttl_ms, 30000);
	CHECK_INT(c.consul.deregister_after_ms, 600000);
	CHECK_INT(c.consul.lock_ttl_ms, 15000);
	CHECK_INT(c.consul.lock_delay_ms, 16000); /* stop-grace + flush-timeout + 1s */
	CHECK_INT(c.consul.lock_wait_ms, 300000);
	const struct cfg_db *d = &c.dbs[0];
	CHECK_STR(d->name, "app.db");
	CHECK_STR(d->meta_path, "/d/.app.db-litevisor");
	CHECK_STR(d->env, "LITEVISOR_DB_APP_DB");
	CHECK(!d->optional);
	CHECK_INT(d->monitor_interval_ms, 1000);
	CHECK_INT(d->checkpoint_interval_ms, 60000);
	CHECK_INT(d->min_checkpoint_page_count, 1000);
	CHECK_INT(d->max_checkpoint_page_count, 10000);
	CHECK_INT(d->truncate_page_count, 500000);
	CHECK_INT(d->max_backlog_bytes, 1024LL * 1024 * 1024);
	const struct cfg_replica *r = &d->replicas[0];
	CHECK_INT(r->connect_timeout_ms, 1000);
	CHECK_INT(r->idle_timeout_ms, 5000);
	CHECK_INT(r->sync_interval_ms, 1000);
	CHECK_INT(r->snapshot_interval_ms, 0);
	CHECK_INT(r->retention_ms, 24 * 3600 * 1000LL);
	CHECK_INT(r->retention_check_interval_ms, 3600 * 1000LL);
	CHECK_INT(r->retention_grace_ms, 3600 * 1000LL);
	config_release(&c);

	/* An empty file is a valid (if idle) config, and config_defaults agrees with it. */
	struct config e = load_ok("");
	struct config z;
	config_defaults(&z);
	CHECK(e.dbs_blank); /* which `run` refuses: what a template missing its data renders */
	e.dbs_blank = false;
	CHECK_MEM(&e, &z, sizeof(z));
	config_release(&e);
}

TEST(same_file_names_in_other_directories_get_distinct_default_names)
{
	/* Litestream accepts radarr's and sonarr's logs.db side by side */
	struct config c = load_ok("dbs:\n"
				  "  - path: /data/radarr/logs.db\n"
				  "  - path: /data/sonarr/logs.db\n"
				  "  - path: /srv/x/sonarr/logs.db\n"
				  "    env: SONARR_LOGS\n"
				  "  - path: /data/app.db\n"
				  "  - path: /data/other/logs.db\n"
				  "    name: logs.db\n");
	CHECK_STR(c.dbs[0].name, "radarr/logs.db");
	CHECK_STR(c.dbs[0].env, "LITEVISOR_DB_RADARR_LOGS_DB");
	CHECK_STR(c.dbs[1].name, "data/sonarr/logs.db");
	CHECK_STR(c.dbs[2].name, "x/sonarr/logs.db");
	CHECK_STR(c.dbs[2].env, "SONARR_LOGS");
	CHECK_STR(c.dbs[3].name, "app.db");
	CHECK_STR(c.dbs[4].name, "logs.db"); /* given names never change */
	config_release(&c);
}

TEST(replicas_sharing_a_default_name_get_distinct_names)
{
	/* Litestream accepts two unnamed S3 replicas (both "s3"): the homelab's peer and NAS */
	struct config c = load_ok("stores:\n"
				  "  nas: { type: s3, bucket: b, endpoint: http://127.0.0.1:9000 }\n"
				  "dbs:\n"
				  "  - path: /data/app.db\n"
				  "    replicas:\n"
				  "      - url: s3://peer/app\n"
				  "      - url: s3://nas/app\n"
				  "      - url: s3://third/app\n"
				  "        name: s3-3\n"
				  "      - url: s3://fourth/app\n"
				  "      - { store: nas, path: a }\n"
				  "      - { store: nas, path: b }\n"
				  "      - url: file:///backup/app\n"
				  "  - path: /data/other.db\n"
				  "    replicas:\n"
				  "      - url: s3://x/other\n"
				  "      - url: s3://y/other\n"
				  "        name: s3\n");
	CHECK_STR(c.dbs[0].replicas[0].name, "s3");
	CHECK_STR(c.dbs[0].replicas[1].name, "s3-2");
	CHECK_STR(c.dbs[0].replicas[2].name, "s3-3"); /* given names never change */
	CHECK_STR(c.dbs[0].replicas[3].name, "s3-4");
	CHECK_STR(c.dbs[0].replicas[4].name, "nas");
	CHECK_STR(c.dbs[0].replicas[5].name, "nas-6");
	CHECK_STR(c.dbs[0].replicas[6].name, "file");
	CHECK_STR(c.dbs[1].replicas[0].name, "s3-1"); /* a given "s3" later in the list wins */
	CHECK_STR(c.dbs[1].replicas[1].name, "s3");
	config_release(&c);
}

TEST(litevisor_sections)
{
	struct config c = load_ok(
		"restore:\n"
		"  probe-timeout: 250ms\n"
		"  mode: quorum\n"
		"  quorum: 2\n"
		"  wait-timeout: 1m\n"
		"  allow-empty-when-unreachable: yes\n"
		"  existing: keep-local\n"
		"  verify: integrity\n"
		"  parallelism: 4\n"
		"  clock-skew: 2s\n"
		"  handover-wait: 45s\n"
		"  keep-replaced: 3\n"
		"supervisor:\n"
		"  user: app\n"
		"  group: app\n"
		"  groups: [video, render]\n"
		"  stop-grace: 20s\n"
		"  flush-timeout: 3s\n"
		"  signal-group: on\n"
		"  new-process-group: true\n"
		"  restart: on-failure\n"
		"  restart-limit: 0\n"
		"  restart-delay: 2s\n"
		"  restart-delay-max: 1m\n"
		"health:\n"
		"  port-label: sup\n"
		"  probe-url: http://127.0.0.1:7878/ping\n"
		"  probe-interval: 10s\n"
		"  probe-timeout: 1s\n"
		"  fail-after: 5m\n"
		"  push-url: https://kuma.lan/api/push/abc\n"
		"  push-interval: 30s\n"
		"dbs:\n"
		"  - path: /d/a.db\n"
		"    name: main\n"
		"    env: APP_DB\n"
		"    optional: true\n"
		"    truncate-page-count: 0\n"
		"    max-backlog: 64MiB\n"
		"    replicas: [{url: \"s3://b/1\", name: one}, {url: \"s3://b/2\", name: two}]\n");
	CHECK_INT(c.restore.probe_timeout_ms, 250);
	CHECK_INT(c.restore.mode, RESTORE_QUORUM);
	CHECK_INT(c.restore.quorum, 2);
	CHECK_INT(c.restore.wait_timeout_ms, 60000);
	CHECK(c.restore.allow_empty_unreachable);
	CHECK_INT(c.restore.existing, EXISTING_KEEP_LOCAL);
	CHECK_INT(c.restore.verify, VERIFY_INTEGRITY);
	CHECK_INT(c.restore.parallelism, 4);
	CHECK_INT(c.restore.clock_skew_ms, 2000);
	CHECK_INT(c.restore.handover_wait_ms, 45000);
	CHECK_INT(c.restore.keep_replaced, 3);
	CHECK_STR(c.supervisor.user, "app");
	CHECK_STR(c.supervisor.group, "app");
	CHECK_STR(c.supervisor.groups[0], "video");
	CHECK_STR(c.supervisor.groups[1], "render");
	CHECK(c.supervisor.groups[2] == NULL);
	CHECK_INT(c.supervisor.stop_grace_ms, 20000);
	CHECK(c.supervisor.signal_group);
	CHECK(c.supervisor.new_process_group);
	CHECK_INT(c.supervisor.restart, RESTART_ON_FAILURE);
	CHECK_INT(c.supervisor.restart_limit, 0);
	CHECK_STR(c.health.port_label, "sup");
	CHECK_STR(c.health.probe_url, "http://127.0.0.1:7878/ping");
	CHECK_INT(c.health.fail_after_ms, 300000);
	CHECK_STR(c.health.push_url, "https://kuma.lan/api/push/abc");
	CHECK_INT(c.health.push_interval_ms, 30000);
	CHECK_STR(c.dbs[0].name, "main");
	CHECK_STR(c.dbs[0].env, "APP_DB");
	CHECK(c.dbs[0].optional);
	CHECK_INT(c.dbs[0].truncate_page_count, 0);
	CHECK_INT(c.dbs[0].max_backlog_bytes, 64 * 1024 * 1024);
	config_release(&c);
}

TEST(env_expansion_in_values)
{
	setenv("LVT_BUCKET", "envbkt", 1);
	setenv("LVT_EMPTY", "", 1);
	unsetenv("LVT_UNSET");
	const char *y = "exec: \"echo $$HOME ${LVT_UNSET:-fallback} $LVT_BUCKET\"\n"
			"dbs:\n"
			"  - path: /d/${LVT_EMPTY:-x}.db\n"
			"    replicas:\n"
			"      - url: s3://${LVT_BUCKET}/p\n"
			"        region: $LVT_UNSET\n";
	struct config c = load_ok(y);
	CHECK_STR(c.exec, "echo $HOME fallback envbkt");
	CHECK_STR(c.dbs[0].path, "/d/x.db");
	CHECK_STR(c.dbs[0].replicas[0].bucket, "envbkt");
	CHECK_STR(c.dbs[0].replicas[0].region, "us-east-1"); /* unset → empty → default */
	config_release(&c);

	struct config_options raw = { .no_expand_env = true };
	char err[512];
	CHECK_INT(config_load_string(y, "t.yml", &raw, &c, err, sizeof(err)), 0);
	CHECK_STR(c.exec, "echo $$HOME ${LVT_UNSET:-fallback} $LVT_BUCKET");
	CHECK_STR(c.dbs[0].replicas[0].bucket, "${LVT_BUCKET}");
	config_release(&c);
}

/* Litestream expands the whole file, then YAML trims a plain value (QA57 D9). */
TEST(env_values_trimmed_in_plain_scalars_as_litestream)
{
	setenv("LVT_PATH", " /d/app.db \r\n", 1);
	setenv("LVT_BUCKET", "bkt\n", 1);
	setenv("LVT_NAME", " nas ", 1);
	const char *y = "dbs:\n"
			"  - path: $LVT_PATH\n"
			"    replicas:\n"
			"      - type: s3\n"
			"        bucket: ${LVT_BUCKET}\n"
			"        name: \"${LVT_NAME}\"\n";
	struct config c = load_ok(y);
	CHECK_STR(c.dbs[0].path, "/d/app.db");
	CHECK_STR(c.dbs[0].replicas[0].bucket, "bkt");
	CHECK_STR(c.dbs[0].replicas[0].name, " nas "); /* quoted: kept as it is */
	config_release(&c);
}

/*
 * An env file for `docker run --env-file` keeps the quotes of DB_PATH="/d/app.db":
 * Litestream expands before YAML reads the file, so a plain value that expands
 * to one quoted string is that string's content (QA174 D1: it was a path under
 * the working directory with quotes in its name).
 */
TEST(env_values_in_quotes_read_as_yaml_reads_them)
{
	setenv("LVT_PATH", "\"/d/a b.db\"\n", 1);
	setenv("LVT_REP", "'/r/it''s'", 1);
	setenv("LVT_BUCKET", "\"bk\\u0074\"", 1);
	setenv("LVT_PREFIX", "p/\"q\"", 1);
	setenv("LVT_META", "\"/m/a\n   b\\\n c\" # a comment", 1); /* folded, as YAML does */
	const char *y = "dbs:\n"
			"  - path: $LVT_PATH\n"
			"    meta-path: $LVT_META\n"
			"    replicas:\n"
			"      - path: ${LVT_REP}\n"
			"      - type: s3\n"
			"        bucket: $LVT_BUCKET\n"
			"        path: $LVT_PREFIX\n"
			"        region: '$LVT_PATH x'\n";
	struct config c = load_ok(y);
	CHECK_STR(c.dbs[0].path, "/d/a b.db");
	CHECK_STR(c.dbs[0].meta_path, "/m/a bc");
	CHECK_STR(c.dbs[0].replicas[0].path, "/r/it's");
	CHECK_STR(c.dbs[0].replicas[1].bucket, "bkt");
	CHECK_STR(c.dbs[0].replicas[1].path, "p/\"q\""); /* quotes inside a value are its own */
	CHECK_STR(c.dbs[0].replicas[1].region, "\"/d/a b.db\"\n x"); /* not one quoted string */
	config_release(&c);

	static const struct {
		const char *value, *yaml, *why;
	} bad[] = {
		{ "\"/d/app.db", "$LVT_X", "found unexpected end of stream" },
		{ "'/d/app.db' x", "$LVT_X", "YAML cannot read it" },
		{ "\"/a\"\n---\n\"/b\"", "$LVT_X", "text follows its closing quote" },
		{ "\"/d/\\q\"", "$LVT_X", "found unknown escape character" },
		{ "\"/d/\\0\"", "$LVT_X", "it holds a NUL byte" },
		{ "\"/d/\\u12\"", "$LVT_X", "did not find expected hexdecimal number" },
		{ "\"/d/app.db\"", "\"$LVT_X\"", "in quotes of its own, inside the quotes here" },
		{ "'/d/app.db'", "'${LVT_X}'", "in quotes of its own, inside the quotes here" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char yaml[256], err[1024] = "";
		struct config cb;
		setenv("LVT_X", bad[i].value, 1);
		snprintf(yaml, sizeof(yaml), "dbs:\n  - path: %s\n    replicas:\n      - path: /r\n",
			 bad[i].yaml);
		if (config_load_string(yaml, "t.yml", NULL, &cb, err, sizeof(err)) != -1 ||
		    !strstr(err, "t.yml:2:11: dbs[0].path: the value from the environment") ||
		    !strstr(err, bad[i].why))
			FAIL("%s in %s: %s", bad[i].value, bad[i].yaml, err);
	}
}

/*
 * An optional value a variable makes a quoted "" is refused as written in the
 * file (Litestream refuses both; QA176 D2); one it makes YAML's null ("~",
 * "null") is the default, as in Litestream (QA174 O6).
 */
TEST(env_values_empty_in_quotes_or_null_as_litestream)
{
	const char *y = "dbs:\n  - path: /d/app.db\n    replicas:\n      - path: /r\n"
			"        sync-interval: $LVT_X\n";
	static const char *const refused[] = { "\"\"", "''", " \"\" " };
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		struct config c;
		char err[1024] = "";
		setenv("LVT_X", refused[i], 1);
		if (config_load_string(y, "t.yml", NULL, &c, err, sizeof(err)) != -1 ||
		    !strstr(err, "sync-interval: must not be empty (the environment gives it as a "
				 "quoted empty string)"))
			FAIL("%s: %s", refused[i], err);
	}
	static const char *const nulls[] = { "~", "null", "NULL", "" };
	for (size_t i = 0; i < sizeof(nulls) / sizeof(nulls[0]); i++) {
		setenv("LVT_X", nulls[i], 1);
		struct config c = load_ok(y);
		CHECK_INT(c.dbs[0].replicas[0].sync_interval_ms, 1000);
		config_release(&c);
	}
}

/* Integers and booleans as Litestream's yaml.v2 reads them (QA57 D3, D7). */
TEST(yaml11_integers_and_booleans)
{
	static const struct {
		const char *s;
		long long want;
	} ints[] = { { "1750", 1750 }, { "01750", 1000 }, { "0x3e8", 1000 }, { "0o1750", 1000 },
		     { "0b11", 3 }, { "1_000", 1000 }, { "1e4", 10000 }, { "09", 9 },
		     { "-12", -12 }, { "+7", 7 }, { "1000.0", 1000 } };
	for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
		long long n = 0;
		if (walk_parse_int(ints[i].s, &n) < 0 || n != ints[i].want)
			FAIL("%s: got %lld, want %lld", ints[i].s, n, ints[i].want);
	}
	static const char *const bad[] = { "", "abc", "1.5", "0x", "1e30", " 5", "--5", "0x1p3",
					   "inf", "nan", "5k", "1e", "9223372036854775808" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		long long n;
		if (walk_parse_int(bad[i], &n) == 0)
			FAIL("\"%s\" was read as %lld", bad[i], n);
	}
	bool b = false;
	CHECK_INT(walk_parse_bool("y", &b), 0);
	CHECK(b);
	CHECK_INT(walk_parse_bool("N", &b), 0);
	CHECK(!b);
	CHECK_INT(walk_parse_bool("yep", &b), -1);
}

TEST(anchors_and_aliases)
{
	struct config c = load_ok(
		"dbs:\n"
		"  - path: /d/a.db\n"
		"    checkpoint-interval: &ck 2m\n"
		"    replicas:\n"
		"      - {url: \"s3://b/a\", retention: &keep 48h}\n"
		"  - path: /d/b.db\n"
		"    checkpoint-interval: *ck\n"
		"    replicas:\n"
		"      - {url: \"s3://b/b\", retention: *keep}\n");
	CHECK_INT(c.dbs[1].checkpoint_interval_ms, 120000);
	CHECK_INT(c.dbs[1].replicas[0].retention_ms, 48 * 3600 * 1000LL);
	config_release(&c);

	/* Merge keys: the map's own keys win, then earlier merged maps over later ones. */
	c = load_ok(
		"supervisor:\n"
		"  groups: [a]\n"
		"  <<: [{groups: [b], restart-limit: 1}, {restart-limit: 2, stop-grace: 3s}]\n"
		"dbs:\n"
		"  - path: /d/a.db\n"
		"    replicas:\n"
		"      - &base {url: \"s3://b/a\", sync-interval: 7s, retention: 2h}\n"
		"      - <<: *base\n"
		"        url: s3://b/b\n"
		"        name: second\n"
		"        retention: 3h\n");
	CHECK_STR(c.supervisor.groups[0], "a");
	CHECK(c.supervisor.groups[1] == NULL);
	CHECK_INT(c.supervisor.restart_limit, 1);
	CHECK_INT(c.supervisor.stop_grace_ms, 3000);
	const struct cfg_replica *r = &c.dbs[0].replicas[1];
	CHECK_STR(r->name, "second");
	CHECK_STR(r->bucket, "b");
	CHECK_STR(r->path, "b");
	CHECK_INT(r->sync_interval_ms, 7000);
	CHECK_INT(r->retention_ms, 3 * 3600 * 1000LL);
	config_release(&c);

	/* A top-level key that only holds an anchor is no setting (Litestream ignores it) */
	c = load_ok(
		"x-defaults: &defaults {sync-interval: 5s, retention: 7d}\n"
		"x-interval: &every 2m\n"
		"x-nested: {a: &grace 2h, b: [&unused 1]}\n"
		"dbs:\n"
		"  - path: /d/a.db\n"
		"    checkpoint-interval: *every\n"
		"    replicas:\n"
		"      - <<: *defaults\n"
		"        url: s3://b/a\n"
		"        retention-grace: *grace\n");
	CHECK_INT(c.dbs[0].checkpoint_interval_ms, 120000);
	CHECK_INT(c.dbs[0].replicas[0].retention_grace_ms, 2 * 3600 * 1000LL);
	CHECK_INT(c.dbs[0].replicas[0].sync_interval_ms, 5000);
	CHECK_INT(c.dbs[0].replicas[0].retention_ms, 7 * 24 * 3600 * 1000LL);
	config_release(&c);
	/* ...but one no alias uses is an unknown key, as is an anchor holder below the top,
	 * and a misspelt key that takes an alias */
	char err[1024];
	CHECK_INT(config_load_string("x-secret: &s abc\nsecret-acess-key: *s\n"
				     "dbs:\n  - path: /d/a.db\n    replicas:\n"
				     "      - {url: \"s3://b/a\", secret-access-key: *s}\n",
				     "t.yml", NULL, &c, err, sizeof(err)), -1);
	CHECK_STR(err, "t.yml:2:1: secret-acess-key: unknown key; did you mean \"secret-access-key\"?");
	CHECK_INT(config_load_string("x-defaults: &defaults {sync-interval: 5s}\n"
				     "dbs:\n  - path: /d/a.db\n", "t.yml", NULL, &c, err, sizeof(err)), -1);
	CHECK_STR(err, "t.yml:1:1: x-defaults: unknown key (docs/config.md lists the keys)");
	CHECK_INT(config_load_string("dbs:\n  - path: /d/a.db\n    retension: &r 1h\n"
				     "    replicas:\n      - {url: \"s3://b/a\", retention: *r}\n",
				     "t.yml", NULL, &c, err, sizeof(err)), -1);
	CHECK_STR(err, "t.yml:3:5: dbs[0].retension: unknown key (docs/config.md lists the keys)");
}

/* Litestream's default file is read when ours does not exist (QA27 D3). */
TEST(default_path_falls_back_to_litestreams)
{
	char dir[] = "/tmp/lv-cfgpath-XXXXXX", ours[64], theirs[64], err[300];
	CHECK(mkdtemp(dir));
	snprintf(ours, sizeof(ours), "%s/litevisor.yml", dir);
	snprintf(theirs, sizeof(theirs), "%s/litestream.yml", dir);
	unsetenv("LITEVISOR_CONFIG");
	unsetenv("LITESTREAM_CONFIG");
	config_set_system_paths(ours, theirs);
	/* neither: ours, and loading it says where else it looked */
	CHECK_STR(config_default_path(NULL, err, sizeof(err)), ours);
	struct config c = { 0 };
	struct config_options o = { 0 };
	CHECK_INT(config_load(config_default_path(NULL, err, sizeof(err)), &o, &c, err, sizeof(err)), -1);
	CHECK(strstr(err, "nor is there") && strstr(err, theirs));
	/* only Litestream's */
	FILE *f = fopen(theirs, "w");
	CHECK(f);
	fputs("dbs:\n  - path: /data/app.db\n    replicas:\n      - url: file:///rep\n", f);
	fclose(f);
	CHECK_STR(config_default_path(NULL, err, sizeof(err)), theirs);
	CHECK(config_path_is_fallback(NULL));
	CHECK_INT(config_load(config_default_path(NULL, err, sizeof(err)), &o, &c, err, sizeof(err)), 0);
	CHECK_INT(c.ndbs, 1);
	config_release(&c);
	/* both: ours wins */
	f = fopen(ours, "w");
	CHECK(f);
	fclose(f);
	CHECK_STR(config_default_path(NULL, err, sizeof(err)), ours);
	CHECK(config_path_is_fallback(NULL));
	unlink(ours);
	unlink(theirs);
	rmdir(dir);
	config_set_system_paths(NULL, NULL);
}

TEST(default_path_order)
{
	char err[200];
	unsetenv("LITEVISOR_CONFIG");
	unsetenv("LITESTREAM_CONFIG");
	CHECK_STR(config_default_path(NULL, err, sizeof(err)), "/etc/litevisor.yml");
	CHECK(config_path_is_fallback(NULL));
	CHECK(!config_path_is_fallback("/etc/litevisor.yml")); /* named, even if it is that one */
	setenv("LITESTREAM_CONFIG", "/ls.yml", 1);
	CHECK_STR(config_default_path(NULL, err, sizeof(err)), "/ls.yml");
	CHECK(!config_path_is_fallback(NULL));
	setenv("LITEVISOR_CONFIG", "/lv.yml", 1);
	CHECK_STR(config_default_path(NULL, err, sizeof(err)), "/lv.yml");
	CHECK_STR(config_default_path("/flag.yml", err, sizeof(err)), "/flag.yml");
	CHECK(!config_path_is_fallback(NULL));
	unsetenv("LITEVISOR_CONFIG");
	unsetenv("LITESTREAM_CONFIG");
}

/* An empty -config or variable is an error, never the next place (QA78 D1). */
TEST(default_path_empty_is_an_error)
{
	char err[200];
	unsetenv("LITEVISOR_CONFIG");
	unsetenv("LITESTREAM_CONFIG");
	CHECK(!config_default_path("", err, sizeof(err)));
	CHECK_STR(err, "-config: a config file is required (the path is empty)");
	CHECK(!config_path_is_fallback(""));
	setenv("LITEVISOR_CONFIG", "", 1);
	setenv("LITESTREAM_CONFIG", "/ls.yml", 1);
	CHECK(!config_default_path(NULL, err, sizeof(err)));
	CHECK_STR(err, "$LITEVISOR_CONFIG is set but empty: name the config file in it, or unset it");
	CHECK(!config_path_is_fallback(NULL));
	CHECK_STR(config_default_path("/flag.yml", err, sizeof(err)), "/flag.yml");
	unsetenv("LITEVISOR_CONFIG");
	setenv("LITESTREAM_CONFIG", "", 1);
	CHECK(!config_default_path(NULL, err, sizeof(err)));
	CHECK_STR(err, "$LITESTREAM_CONFIG is set but empty: name the config file in it, or unset it");
	unsetenv("LITESTREAM_CONFIG");
}

TEST(file_errors_name_the_file)
{
	struct config c;
	char err[512];
	CHECK_INT(config_load("config/does-not-exist.yml", NULL, &c, err, sizeof(err)), -1);
	CHECK_STR(err, "config/does-not-exist.yml: cannot read the config file: No such file or directory");
	CHECK_INT(config_load("config", NULL, &c, err, sizeof(err)), -1);
	CHECK_STR(err, "config: cannot read the config file: not a regular file but a directory");
}

struct bad_case {
	const char *name, *yaml, *want;
};

static const struct bad_case bad_cases[] = {
	{ "unknown_top_key_hint",
	  "adr: \":9090\"\n",
	  "bad.yml:1:1: adr: unknown key; did you mean \"addr\"?" },
	{ "unknown_replica_key_hint",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    replicas:\n"
	  "      - url: s3://bkt/app\n"
	  "        sync-intervall: 1s\n",
	  "bad.yml:5:9: dbs[0].replicas[0].sync-intervall: unknown key; did you mean \"sync-interval\"?" },
	{ "underscore_key_hint",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    replicas:\n"
	  "      - url: s3://bkt/app\n"
	  "        force_path_style: true\n",
	  "bad.yml:5:9: dbs[0].replicas[0].force_path_style: unknown key; did you mean \"force-path-style\"?" },
	{ "replica_key_on_db",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    retention: 72h\n",
	  "bad.yml:3:5: dbs[0].retention: not valid here; it belongs under each entry of a db's replicas:" },
	{ "supervisor_key_on_top",
	  "user: app\n",
	  "bad.yml:1:1: user: not valid here; it belongs under supervisor:" },
	{ "credentials_in_url",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    replicas:\n"
	  "      - url: s3://AKIA:secret@bkt/app\n",
	  "bad.yml:4:14: dbs[0].replicas[0].url: a replica URL must not carry credentials (user@host); use access-key-id and secret-access-key" },
	{ "merge_key_not_map",
	  "supervisor:\n"
	  "  <<: 5\n",
	  "bad.yml:2:7: supervisor.<<: a merge key takes a map (or a list of maps), got a single value" },
	{ "unset_env_in_url",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    replicas:\n"
	  "      - url: s3://${LITEVISOR_TEST_UNSET_DB}/app\n",
	  "bad.yml:4:14: dbs[0].replicas[0].url: invalid s3 URL \"s3:///app\" (expected s3://BUCKET/PATH) (environment variable LITEVISOR_TEST_UNSET_DB is not set)" },
	{ "unset_env_bucket",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    replicas:\n"
	  "      - type: s3\n"
	  "        bucket: $LITEVISOR_TEST_UNSET_DB\n",
	  "bad.yml:4:9: dbs[0].replicas[0]: missing bucket: an s3 replica needs url: s3://BUCKET/PATH or bucket: (environment variable LITEVISOR_TEST_UNSET_DB is not set)" },
	{ "unset_env_store_url",
	  "stores:\n"
	  "  nas:\n"
	  "    url: ${LITEVISOR_TEST_UNSET_DB}\n",
	  "bad.yml:3:5: stores.nas: missing path: a file store needs url: file:///DIR or path: /DIR (environment variable LITEVISOR_TEST_UNSET_DB is not set)" },
	{ "zero_monitor_interval",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    monitor-interval: 0\n",
	  "bad.yml:3:23: dbs[0].monitor-interval: must be more than 0 (Litestream v0.3.13 would not watch the database at all and replicate nothing while it runs; remove the key for the 1s default)" },
	{ "bare_number_duration",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    replicas:\n"
	  "      - url: s3://bkt/app\n"
	  "        sync-interval: 10\n",
	  "bad.yml:5:24: dbs[0].replicas[0].sync-interval: invalid duration \"10\": a number needs a unit, e.g. \"10s\" (Litestream v0.3.13 reads a bare number as nanoseconds)" },
	{ "sub_millisecond_duration",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    replicas:\n"
	  "      - url: s3://bkt/app\n"
	  "        retention: 500us\n",
	  "bad.yml:5:20: dbs[0].replicas[0].retention: invalid duration \"500us\": below litevisor's 1ms resolution (Litestream v0.3.13 would run that often, close to a busy loop); write \"1ms\" or more" },
	{ "zero_stop_grace",
	  "supervisor:\n"
	  "  stop-grace: 0s\n",
	  "bad.yml:2:15: supervisor.stop-grace: must be more than 0" },
	{ "endpoint_bad_scheme",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    replicas:\n"
	  "      - url: s3://bkt/app\n"
	  "        endpoint: ftp://minio.lan:9000\n",
	  "bad.yml:5:19: dbs[0].replicas[0].endpoint: must start with http:// or https://" },
	{ "endpoint_with_credentials",
	  "stores:\n"
	  "  m:\n"
	  "    type: s3\n"
	  "    bucket: b\n"
	  "    endpoint: http://AKIA:hunter2@minio.lan:9000\n"
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    replicas:\n"
	  "      - store: m\n",
	  "bad.yml:5:15: stores.m.endpoint: needs a host (http(s)://HOST[:PORT]) and must not carry credentials" },
	{ "path_is_url",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    replicas:\n"
	  "      - path: s3://bkt/app\n",
	  "bad.yml:4:15: dbs[0].replicas[0].path: is a URL; put it in url: instead (path: is a directory or key prefix)" },
	{ "merge_bomb",
	  "supervisor:\n"
	  "  <<: [&m4 {<<: [&m3 {<<: [&m2 {<<: [&m1 {<<: [&m0 {restart-limit: 1}, *m0, *m0, *m0, *m0, *m0, *m0, *m0, *m0, *m0]}, *m1, *m1, *m1, *m1, *m1, *m1, *m1, *m1, *m1]}, *m2, *m2, *m2, *m2, *m2, *m2, *m2, *m2, *m2]}, *m3, *m3, *m3, *m3, *m3, *m3, *m3, *m3, *m3]}, *m4, *m4, *m4, *m4, *m4, *m4, *m4, *m4, *m4]\n",
	  "bad.yml:2:43: supervisor.<<: merge keys nested too deeply or used too often" },
	{ "enum_hint",
	  "restore:\n"
	  "  mode: freshest\n",
	  "bad.yml:2:9: restore.mode: invalid value \"freshest\"; did you mean \"freshest-reachable\"?" },
	{ "enum_hint_typo",
	  "supervisor:\n"
	  "  restart: on_failure\n",
	  "bad.yml:2:12: supervisor.restart: invalid value \"on_failure\"; did you mean \"on-failure\"?" },
	{ "unknown_key_no_hint",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    colour: blue\n",
	  "bad.yml:3:5: dbs[0].colour: unknown key (docs/config.md lists the keys)" },
	{ "bad_duration",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    replicas:\n"
	  "      - url: s3://bkt/app\n"
	  "        sync-interval: 5x\n",
	  "bad.yml:5:24: dbs[0].replicas[0].sync-interval: invalid duration \"5x\": missing or unknown unit (use ms, s, m, h or d, e.g. \"5s\")" },
	{ "negative_duration",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    replicas:\n"
	  "      - url: s3://bkt/app\n"
	  "        retention: -1h\n",
	  "bad.yml:5:20: dbs[0].replicas[0].retention: invalid duration \"-1h\": must not be negative" },
	{ "dbs_is_map",
	  "dbs:\n"
	  "  path: /data/app.db\n",
	  "bad.yml:2:3: dbs: expected a list of databases, got a map" },
	{ "replicas_is_map",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    replicas:\n"
	  "      url: s3://bkt/app\n",
	  "bad.yml:4:7: dbs[0].replicas: expected a list of replicas (lines starting with \"- \"), got a map" },
	{ "replica_is_scalar",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    replicas:\n"
	  "      - s3://bkt/app\n",
	  "bad.yml:4:9: dbs[0].replicas[0]: expected a map of replica settings, got a single value" },
	{ "scalar_is_list",
	  "exec: [radarr, -nobrowser]\n",
	  "bad.yml:1:7: exec: expected a single value, got a list" },
	{ "db_missing_path",
	  "dbs:\n"
	  "  - replicas:\n"
	  "      - url: s3://bkt/app\n",
	  "bad.yml:2:5: dbs[0]: missing required key \"path\" (the database file)" },
	{ "s3_missing_bucket",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    replicas:\n"
	  "      - type: s3\n"
	  "        path: app\n",
	  "bad.yml:4:9: dbs[0].replicas[0]: missing bucket: an s3 replica needs url: s3://BUCKET/PATH or bucket:" },
	{ "file_missing_path",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    replicas:\n"
	  "      - type: file\n",
	  "bad.yml:4:9: dbs[0].replicas[0]: missing path: a file replica needs url: file:///DIR or path: /DIR" },
	{ "db_name_with_a_quote", /* it would end its log field early (QA15) */
	  "dbs:\n"
	  "  - {path: /data/app.db, name: '\"x'}\n",
	  "bad.yml:2:32: dbs[0].name: \"\"x\" holds a '\"', a '\\' or a control character: names appear in logs and metric labels" },
	{ "replica_name_with_a_backslash",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    replicas:\n"
	  "      - {url: 'file:///r', name: 'a b\\'}\n",
	  "bad.yml:4:34: dbs[0].replicas[0].name: \"a b\\\" holds a '\"', a '\\' or a control character: names appear in logs and metric labels" },
	{ "db_name_too_long", /* cut to the status copies' 64 bytes, two names were one label */
	  "dbs:\n"
	  "  - {path: /data/app.db, name: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa}\n",
	  "bad.yml:2:32: dbs[0].name: longer than 63 bytes" },
	{ "duplicate_key",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    path: /data/other.db\n",
	  "bad.yml:3:5: dbs[0].path: duplicate key (first at line 2, column 5)" },
	{ "duplicate_db_path",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "  - path: /data/app.db\n",
	  "bad.yml:3:11: dbs[1].path: same file as dbs[0].path (line 2): /data/app.db" },
	{ "duplicate_db_path_spelled_differently",
	  "dbs:\n"
	  "  - {path: /data/app.db, name: a, env: A}\n"
	  "  - {path: /data//x/./../app.db/, name: b, env: B}\n",
	  "bad.yml:3:12: dbs[1].path: same file as dbs[0].path (line 2): /data/app.db" },
	{ "duplicate_db_name",
	  "dbs:\n"
	  "  - path: /data/a/app.db\n"
	  "    name: app\n"
	  "  - path: /data/b/app.db\n"
	  "    name: app\n",
	  "bad.yml:5:11: dbs[1].name: same name as dbs[0] (line 2); give each database its own \"name\" and \"env\"" },
	{ "duplicate_replica_name",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    replicas:\n"
	  "      - url: s3://bkt/app\n"
	  "        name: peer\n"
	  "      - url: s3://other/app\n"
	  "        name: peer\n",
	  "bad.yml:7:15: dbs[0].replicas[1].name: duplicate replica name \"peer\" (also dbs[0].replicas[0], line 4); give each replica its own \"name\"" },
	{ "same_destination",
	  "dbs:\n"
	  "  - path: /data/a.db\n"
	  "    replicas:\n"
	  "      - url: file:///backup/x\n"
	  "  - path: /data/b.db\n"
	  "    replicas:\n"
	  "      - path: /backup/x\n",
	  "bad.yml:7:9: dbs[1].replicas[0]: writes to the same place as dbs[0].replicas[0] (line 4): /backup/x; give it its own path" },
	{ "same_destination_spelled_differently",
	  "dbs:\n"
	  "  - path: /data/a.db\n"
	  "    replicas:\n"
	  "      - url: file:///backup/x\n"
	  "  - path: /data/b.db\n"
	  "    replicas:\n"
	  "      - path: /backup//y/../x/\n",
	  "bad.yml:7:9: dbs[1].replicas[0]: writes to the same place as dbs[0].replicas[0] (line 4): /backup/x; give it its own path" },
	{ "same_s3_destination_spelled_differently",
	  "dbs:\n"
	  "  - path: /data/a.db\n"
	  "    replicas:\n"
	  "      - url: s3://bkt/app/db\n"
	  "  - path: /data/b.db\n"
	  "    replicas:\n"
	  "      - {url: s3://bkt//app/./x/../db/, name: other}\n",
	  "bad.yml:7:9: dbs[1].replicas[0]: writes to the same place as dbs[0].replicas[0] (line 4): s3://bkt/app/db; give it its own path" },
	{ "age_bad_recipient",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    replicas:\n"
	  "      - url: s3://bkt/app\n"
	  "        age:\n"
	  "          recipients: [age1xyz]\n",
	  "bad.yml:6:24: dbs[0].replicas[0].age.recipients[0]: invalid age recipient \"age1xyz\": no separator, or too short" },
	{ "near_miss_with_punctuation",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    replicas:\n"
	  "      - url: s3://bkt/app\n"
	  "        sync-interval/: 1s\n",
	  "bad.yml:5:9: dbs[0].replicas[0].sync-interval/: unknown key; did you mean \"sync-interval\"?" },
	{ "age_plugin_recipient",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    replicas:\n"
	  "      - url: s3://bkt/app\n"
	  "        age:\n"
	  "          recipients: [age1yubikey1qwqwqwqwqwqwqwqw]\n",
	  "bad.yml:6:24: dbs[0].replicas[0].age.recipients[0]: invalid age recipient \"age1yubikey1qwqwqwqwqwqwqwqw\": age plugins are not supported by litevisor (age X25519 keys only)" },
	{ "age_on_a_store",
	  "stores:\n"
	  "  bk:\n"
	  "    url: s3://bkt/app\n"
	  "    age:\n"
	  "      recipients: [age1595xm0yhfwpcrkap3v9w3yx443uphwtl993d8npwq699099equkq5vzemr]\n"
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    replicas:\n"
	  "      - store: bk\n",
	  "bad.yml:4:5: stores.bk.age: not allowed in a store (set it on each replica that uses the store)" },
	{ "age_identity_as_recipient",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    replicas:\n"
	  "      - url: file:///b/app\n"
	  "        age:\n"
	  "          identities: [age1595xm0yhfwpcrkap3v9w3yx443uphwtl993d8npwq699099equkq5vzemr]\n",
	  "bad.yml:6:24: dbs[0].replicas[0].age.identities[0]: invalid age identity: a recipient (age1…) where an identity belongs (value redacted)" },
	{ "gcs_type_unsupported",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    replicas:\n"
	  "      - type: gcs\n"
	  "        bucket: b\n",
	  "bad.yml:4:15: dbs[0].replicas[0].type: type \"gcs\" is not supported by litevisor (s3 and file only; most object stores, GCS included, also speak S3)" },
	{ "abs_url_unsupported",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    replicas:\n"
	  "      - url: abs://acct@container/app\n",
	  "bad.yml:4:14: dbs[0].replicas[0].url: replica URL scheme \"abs\" is not supported by litevisor (s3 and file only)" },
	{ "sftp_key_unsupported",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    replicas:\n"
	  "      - type: s3\n"
	  "        host: example.com\n",
	  "bad.yml:5:9: dbs[0].replicas[0].host: not supported by litevisor (SFTP replicas; litevisor writes to s3 and file replicas only)" },
	{ "validation_interval",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    replicas:\n"
	  "      - url: s3://bkt/app\n"
	  "        validation-interval: 6h\n",
	  "bad.yml:5:30: dbs[0].replicas[0].validation-interval: not supported by litevisor (validation restores a full copy in the background; use `litevisor restore` to check a replica); remove it or set 0" },
	{ "min_checkpoint_zero",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    min-checkpoint-page-count: 0\n",
	  "bad.yml:3:32: dbs[0].min-checkpoint-page-count: 0 is out of range (at least 1)" },
	{ "negative_count",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    truncate-page-count: -5\n",
	  "bad.yml:3:26: dbs[0].truncate-page-count: -5 is out of range (at least 0)" },
	{ "parallelism_zero",
	  "restore:\n"
	  "  parallelism: 0\n",
	  "bad.yml:2:16: restore.parallelism: 0 is out of range (1 to 256)" },
	{ "quorum_too_big",
	  "restore:\n"
	  "  mode: quorum\n"
	  "  quorum: 3\n"
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    replicas:\n"
	  "      - url: s3://bkt/app\n"
	  "      - url: file:///backup/app\n",
	  "bad.yml:3:11: restore.quorum: 3 is more than the 2 replicas of dbs[0] (app.db)" },
	{ "quorum_mode_missing_quorum",
	  "restore:\n"
	  "  mode: quorum\n",
	  "bad.yml:2:9: restore.mode: mode quorum needs restore.quorum (how many replicas must answer)" },
	{ "quorum_without_mode",
	  "restore:\n"
	  "  quorum: 2\n",
	  "bad.yml:2:11: restore.quorum: only used with restore.mode: quorum" },
	{ "bad_enum",
	  "restore:\n"
	  "  mode: fastest\n",
	  "bad.yml:2:9: restore.mode: invalid value \"fastest\" (one of: freshest-reachable, all, quorum)" },
	{ "stderr_false",
	  "logging:\n"
	  "  stderr: false\n",
	  "bad.yml:2:11: logging.stderr: litevisor always logs to stderr (stdout belongs to the service); remove the key or set it to true" },
	{ "bad_level",
	  "logging:\n"
	  "  level: verbose\n",
	  "bad.yml:2:10: logging.level: invalid level \"verbose\" (one of: debug, info, warn, error)" },
	{ "bad_bool",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    replicas:\n"
	  "      - url: s3://bkt/app\n"
	  "        force-path-style: maybe\n",
	  "bad.yml:5:27: dbs[0].replicas[0].force-path-style: invalid boolean \"maybe\" (use true or false)" },
	{ "secret_bad_expansion",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    replicas:\n"
	  "      - url: s3://bkt/app\n"
	  "        secret-access-key: \"s3cr${et\"\n",
	  "bad.yml:5:28: dbs[0].replicas[0].secret-access-key: unterminated \"${\" (write \"$$\" for a literal \"$\") (value redacted)" },
	{ "unset_env_required",
	  "dbs:\n"
	  "  - path: ${LITEVISOR_TEST_UNSET_DB}\n",
	  "bad.yml:2:11: dbs[0].path: empty: environment variable LITEVISOR_TEST_UNSET_DB is not set" },
	{ "secret_file_missing",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    replicas:\n"
	  "      - url: s3://bkt/app\n"
	  "        access-key-id-file: /nonexistent/akid\n",
	  "bad.yml:5:29: dbs[0].replicas[0].access-key-id-file: cannot read \"/nonexistent/akid\": No such file or directory" },
	{ "secret_both",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    replicas:\n"
	  "      - url: s3://bkt/app\n"
	  "        secret-access-key: hunter2hunter2\n"
	  "        secret-access-key-file: /etc/hostname\n",
	  "bad.yml:6:33: dbs[0].replicas[0].secret-access-key-file: give secret-access-key or secret-access-key-file, not both" },
	{ "unknown_store_hint",
	  "stores:\n"
	  "  minio-106:\n"
	  "    url: s3://bkt.localhost:9000/x\n"
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    replicas:\n"
	  "      - store: minio-160\n",
	  "bad.yml:7:16: dbs[0].replicas[0].store: no store named \"minio-160\"; did you mean \"minio-106\"?" },
	{ "url_with_store",
	  "stores:\n"
	  "  nas:\n"
	  "    url: file:///mnt/nas\n"
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    replicas:\n"
	  "      - store: nas\n"
	  "        url: file:///elsewhere\n",
	  "bad.yml:8:14: dbs[0].replicas[0].url: not allowed together with store: (store \"nas\" sets it)" },
	{ "schedule_in_store",
	  "stores:\n"
	  "  nas:\n"
	  "    url: file:///mnt/nas\n"
	  "    sync-interval: 10s\n",
	  "bad.yml:4:5: stores.nas.sync-interval: not allowed in a store (set it on each replica that uses the store)" },
	{ "s3_key_on_file",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    replicas:\n"
	  "      - path: /backup/app\n"
	  "        bucket: bkt\n",
	  "bad.yml:5:17: dbs[0].replicas[0].bucket: only for s3 replicas, and this one is type file: it has no url: or type:, so Litestream v0.3.13 would have replicated to the local directory path: and ignored this key; add type: s3 (or url: s3://BUCKET/PATH), or type: file to keep a file replica" },
	{ "litevisor_s3_key_on_file",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    replicas:\n"
	  "      - url: file:///backup/app\n"
	  "        connect-timeout: 1s\n",
	  "bad.yml:5:26: dbs[0].replicas[0].connect-timeout: only for s3 replicas (this replica is type file)" },
	{ "yaml_syntax",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "   replicas: []\n",
	  "bad.yml:3:4: invalid YAML: did not find expected '-' indicator while parsing a block collection" },
	{ "yaml_tab",
	  "dbs:\n"
	  "\t- path: /data/app.db\n",
	  "bad.yml:2:1: invalid YAML: found character that cannot start any token while scanning for the next token (YAML does not allow tabs for indentation)" },
	/* Litestream expands before YAML reads the text: there this is a URL (QA71 D3) */
	{ "yaml_flow_brace_var",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    replicas:\n"
	  "      - {url: ${REPLICA_URL}, sync-interval: 1s}\n",
	  "bad.yml:4:16: invalid YAML: did not find expected ',' or '}' while parsing a flow mapping (inside [ ] or { } write a variable as \"${VAR}\" or $VAR: variables are expanded after the YAML is read, not before as in Litestream)" },
	{ "second_document",
	  "addr: \":9090\"\n"
	  "---\n"
	  "addr: \":9091\"\n",
	  "bad.yml:2:1: a second YAML document (\"---\") is not allowed in a config file (Litestream v0.3.13 would ignore it: it reads the first only)" },
	{ "restart_limit_negative",
	  "supervisor:\n"
	  "  restart-limit: -1\n",
	  "bad.yml:2:18: supervisor.restart-limit: -1 is out of range (at least 0)" },
	{ "addr_no_port",
	  "addr: localhost\n",
	  "bad.yml:1:7: addr: invalid address \"localhost\" (expected HOST:PORT, [IPV6]:PORT or :PORT)" },
	{ "addr_unclosed_bracket",
	  "addr: \"[::1\"\n",
	  "bad.yml:1:7: addr: invalid address \"[::1\" (expected HOST:PORT, [IPV6]:PORT or :PORT)" },
	{ "addr_signed_port",
	  "addr: \":+80\"\n",
	  "bad.yml:1:7: addr: invalid address \":+80\" (expected HOST:PORT, [IPV6]:PORT or :PORT)" },
	{ "addr_host_unset", /* would listen on every interface */
	  "addr: \"${LITEVISOR_TEST_UNSET_DB}:9090\"\n",
	  "bad.yml:1:7: addr: \":9090\": environment variable LITEVISOR_TEST_UNSET_DB is not set" },
	{ "addr_port_unset", /* the radarr job outside Nomad: NOMAD_PORT_sup */
	  "addr: \"0.0.0.0:${LITEVISOR_TEST_UNSET_DB}\"\n",
	  "bad.yml:1:7: addr: invalid address \"0.0.0.0:\" (expected HOST:PORT, [IPV6]:PORT or :PORT) (environment variable LITEVISOR_TEST_UNSET_DB is not set)" },
	{ "probe_url_host_unset", /* would probe nobody: never ready */
	  "health:\n"
	  "  probe-url: http://${LITEVISOR_TEST_UNSET_DB}:7878/ping\n",
	  "bad.yml:2:14: health.probe-url: environment variable LITEVISOR_TEST_UNSET_DB is not set" },
	{ "push_url_unset",
	  "health:\n"
	  "  push-url: http://kuma/api/push/${LITEVISOR_TEST_UNSET_DB}\n",
	  "bad.yml:2:13: health.push-url: environment variable LITEVISOR_TEST_UNSET_DB is not set" },
	{ "two_unset_in_one_value", /* both holes named, not just the first */
	  "addr: \"${LITEVISOR_TEST_UNSET_DB}:${LITEVISOR_TEST_UNSET_PORT}\"\n",
	  "bad.yml:1:7: addr: invalid address \":\" (expected HOST:PORT, [IPV6]:PORT or :PORT) (environment variables LITEVISOR_TEST_UNSET_DB, LITEVISOR_TEST_UNSET_PORT are not set)" },
	{ "many_unset_in_one_value", /* whole names, then how many more: never one cut short */
	  "dbs:\n  - path: /tmp/a.db\n    replicas:\n      - url: \"s3://${LITEVISOR_TEST_UNSET_0}/"
	  "${LITEVISOR_TEST_UNSET_1}/${LITEVISOR_TEST_UNSET_2}/${LITEVISOR_TEST_UNSET_3}/"
	  "${LITEVISOR_TEST_UNSET_4}/${LITEVISOR_TEST_UNSET_5}/${LITEVISOR_TEST_UNSET_6}/"
	  "${LITEVISOR_TEST_UNSET_7}/${LITEVISOR_TEST_UNSET_8}/${LITEVISOR_TEST_UNSET_9}/"
	  "${LITEVISOR_TEST_UNSET_10}/${LITEVISOR_TEST_UNSET_11}\"\n",
	  "bad.yml:4:14: dbs[0].replicas[0].url: invalid s3 URL \"s3://///////////\" (expected s3://BUCKET/PATH) (environment variables LITEVISOR_TEST_UNSET_0, LITEVISOR_TEST_UNSET_1, LITEVISOR_TEST_UNSET_2, LITEVISOR_TEST_UNSET_3 and 8 more are not set)" },
	{ "secret_file_dir_unset",
	  "access-key-id-file: ${LITEVISOR_TEST_UNSET_DB}/no-such-key\n",
	  "bad.yml:1:21: access-key-id-file: cannot read \"/no-such-key\": No such file or directory (environment variable LITEVISOR_TEST_UNSET_DB is not set)" },
	{ "restart_delay_max_low",
	  "supervisor:\n"
	  "  restart-delay: 2m\n"
	  "  restart-delay-max: 30s\n",
	  "bad.yml:3:22: supervisor.restart-delay-max: restart-delay-max must not be less than restart-delay" },
	{ "restart_reset_zero",
	  "supervisor:\n"
	  "  restart: on-failure\n"
	  "  restart-reset: 0s\n",
	  "bad.yml:3:18: supervisor.restart-reset: must be longer than 0s: a run at least this long starts a new series of restarts, so every run would, and restart-limit would never apply" },
	{ "signal_group_alone",
	  "supervisor:\n"
	  "  signal-group: true\n",
	  "bad.yml:2:17: supervisor.signal-group: needs new-process-group: true (the service's own process group to signal); set both" },
	{ "url_and_bucket",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    replicas:\n"
	  "      - url: s3://bkt/app\n"
	  "        bucket: other\n",
	  "bad.yml:5:17: dbs[0].replicas[0].bucket: give either url or bucket, not both" },
	{ "probe_url_not_http",
	  "health:\n"
	  "  probe-url: localhost:7878/ping\n",
	  "bad.yml:2:14: health.probe-url: expected an http:// or https:// URL" },
	{ "bad_size",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    max-backlog: 1 lot\n",
	  "bad.yml:3:18: dbs[0].max-backlog: invalid size \"1 lot\": unknown unit \"lot\" (use B, K, KiB, KB, kB, M, MiB, MB, G, GiB, GB, T, TiB, TB)" },
	{ "bad_env_name",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    env: 1BAD-NAME\n",
	  "bad.yml:3:10: dbs[0].env: invalid environment variable name \"1BAD-NAME\" (letters, digits and _, "
	  "not starting with a digit)" },
	{ "s3_url_no_bucket",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    replicas:\n"
	  "      - url: s3://localhost:9000/app\n",
	  "bad.yml:4:14: dbs[0].replicas[0].url: s3 URL \"s3://localhost:9000/app\" names no bucket (expected s3://BUCKET.localhost:9000/PATH)" },
	{ "unknown_alias",
	  "addr: *port\n",
	  "bad.yml:1:7: unknown alias \"*port\"" },
	{ "quoted_empty_duration",
	  "dbs:\n"
	  "  - path: /data/app.db\n"
	  "    replicas:\n"
	  "      - url: s3://bkt/app\n"
	  "        retention: \"\"\n",
	  "bad.yml:5:20: dbs[0].replicas[0].retention: must not be empty" },
	{ "null_quorum_is_no_quorum",
	  "restore:\n"
	  "  mode: quorum\n"
	  "  quorum: null\n",
	  "bad.yml:2:9: restore.mode: mode quorum needs restore.quorum (how many replicas must answer)" },
	{ "store_not_map",
	  "stores:\n"
	  "  nas: file:///mnt/nas\n",
	  "bad.yml:2:8: stores.nas: expected a map of store settings, got a single value" },
	{ "groups_not_list",
	  "supervisor:\n"
	  "  groups: video\n",
	  "bad.yml:2:11: supervisor.groups: expected a list of group names, got a single value" },

};

/* Every bad config is refused with exactly this message, and nothing leaks into it. */
TEST(bad_configs_give_exact_errors)
{
	size_t n = sizeof(bad_cases) / sizeof(bad_cases[0]), failed = 0;
	unsetenv("LITEVISOR_TEST_UNSET_DB");
	CHECK(n >= 30);
	for (size_t i = 0; i < n; i++) {
		struct config c;
		char err[1024] = "";
		int rc = config_load_string(bad_cases[i].yaml, "bad.yml", NULL, &c, err, sizeof(err));
		if (rc != -1 || strcmp(err, bad_cases[i].want) != 0) {
			fprintf(stderr, "%s: rc=%d\n  got:  %s\n  want: %s\n", bad_cases[i].name, rc, err,
				bad_cases[i].want);
			failed++;
		}
		/* A failed load leaves nothing behind. */
		struct config zero;
		memset(&zero, 0, sizeof(zero));
		CHECK_MEM(&c, &zero, sizeof(zero));
	}
	CHECK_INT(failed, 0);
}

/* Credentials never show in a message, whatever is wrong with them. */
TEST(credentials_never_in_errors)
{
	static const char *const yamls[] = {
		"secret-access-key: [hunter2]\n",
		"access-key-id: \"hunter2${\"\n",
		"dbs:\n  - path: /d/a.db\n    replicas:\n      - {url: \"s3://b/p\", session-token: \"${hunter2 x}\"}\n",
		"dbs:\n  - path: /d/a.db\n    replicas:\n      - {path: /x, access-key-id: hunter2}\n",
		"stores:\n  s: {url: \"file:///x\", secret-access-key: hunter2}\n",
		"dbs:\n  - path: /d/a.db\n    replicas:\n      - url: s3://AK:hunter2@bkt/p\n",
		"dbs:\n  - path: /d/a.db\n    replicas:\n      - url: sftp://me:hunter2@host/p\n",
		"dbs:\n  - path: /d/a.db\n    replicas:\n      - url: \"hunter2@bkt\"\n",
		/* a second identity without brackets is read as a key (QA51 #1) */
		"dbs:\n  - path: /d/a.db\n    replicas:\n      - url: s3://b/p\n        age: "
		"{identities: AGE-SECRET-KEY-1QQQ, AGE-SECRET-KEY-1hunter2HUNTER2HUNTER2HUNTER2HUNTER2, "
		"recipients: [age1x]}\n",
		"hunter2/HUNTER2+hunter2/HUNTER2=: 1\n",
		/* a comma for a colon: a Consul token (a UUID) read as a key (QA52 D2) */
		"consul: {lock: {key: a}, token, 3f2504e0-4f89-hunter2-9a0c-0305e82c3301}\n",
		"dbs:\n  - path: /d/a.db\n    replicas:\n      - {url: \"s3://b/p\", "
		"secret-access-key, Hunter2Hunter2Hunter2}\n",
	};
	for (size_t i = 0; i < sizeof(yamls) / sizeof(yamls[0]); i++) {
		struct config c;
		char err[1024] = "";
		CHECK_INT(config_load_string(yamls[i], "bad.yml", NULL, &c, err, sizeof(err)), -1);
		if (strstr(err, "hunter2"))
			FAIL("credential in message: %s", err);
		CHECK(strncmp(err, "bad.yml:", 8) == 0);
	}
}

TEST(secret_files_are_checked_at_load)
{
	char dir[] = "/tmp/lvcfgXXXXXX";
	CHECK(mkdtemp(dir) != NULL);
	char file[128], yaml[512], err[1024];
	snprintf(file, sizeof(file), "%s/akid", dir);
	FILE *f = fopen(file, "w");
	CHECK(f != NULL);
	fputs("AKIAFROMFILE\n", f);
	fclose(f);
	snprintf(yaml, sizeof(yaml),
		 "access-key-id-file: %s\nsecret-access-key-file: %s\n"
		 "dbs:\n  - path: /d/a.db\n    replicas:\n      - url: s3://b/p\n", file, file);
	struct config c = load_ok(yaml);
	CHECK_STR(c.dbs[0].replicas[0].access_key_id.file, file);
	CHECK(c.dbs[0].replicas[0].access_key_id.value == NULL);
	CHECK_STR(c.dbs[0].replicas[0].secret_access_key.file, file);
	config_release(&c);
	unlink(file);
	CHECK_INT(config_load_string(yaml, "t.yml", NULL, &c, err, sizeof(err)), -1);
	char want[512];
	snprintf(want, sizeof(want), "t.yml:1:21: access-key-id-file: cannot read \"%s\": No such file or directory", file);
	CHECK_STR(err, want);
	rmdir(dir);
}

/* Mangled configs are refused with a message, never a crash (this also runs under ASan). */
TEST(survives_mutated_input)
{
	static const char base[] =
		"node: node-105\n"
		"stores:\n"
		"  m5: {url: \"s3://b.localhost:9000/x\", node: node-105, access-key-id: k}\n"
		"  nas:\n"
		"    url: file:///mnt/nas\n"
		"restore: {mode: quorum, quorum: 1}\n"
		"supervisor: {groups: [a, b], restart: on-failure}\n"
		"dbs:\n"
		"  - path: /d/a.db\n"
		"    max-backlog: 1GiB\n"
		"    replicas:\n"
		"      - &r {store: m5, path: \"a${HOME:-x}\", sync-interval: 1s}\n"
		"      - <<: *r\n"
		"        store: nas\n"
		"      - url: s3://bkt/p\n"
		"        retention: 24h\n";
	static const char junk[] = ":-[]{}&*!|>'\"\t\n #$%@,?~0123456789abcdefgh";
	char buf[sizeof(base) + 64], err[1024];
	uint32_t seed = 12345;
	size_t loaded = 0;
	for (int iter = 0; iter < 4000; iter++) {
		size_t len = sizeof(base) - 1;
		memcpy(buf, base, len + 1);
		int edits = 1 + (int)((seed >> 8) % 4);
		for (int e = 0; e < edits; e++) {
			seed = seed * 1103515245u + 12345u;
			size_t pos = (seed >> 4) % len;
			char c = junk[(seed >> 16) % (sizeof(junk) - 1)];
			switch ((seed >> 24) % 3) {
			case 0: /* replace */
				buf[pos] = c;
				break;
			case 1: /* insert */
				if (len + 1 < sizeof(buf)) {
					memmove(buf + pos + 1, buf + pos, len - pos + 1);
					buf[pos] = c;
					len++;
				}
				break;
			default: /* delete */
				memmove(buf + pos, buf + pos + 1, len - pos);
				len--;
				break;
			}
		}
		struct config c;
		err[0] = '\0';
		int rc = config_load_string(buf, "t.yml", NULL, &c, err, sizeof(err));
		if (rc == 0) {
			loaded++;
			config_release(&c);
		} else if (rc != -1 || strncmp(err, "t.yml", 5) != 0) {
			FAIL("rc=%d err=\"%s\" for:\n%s", rc, err, buf);
		}
	}
	/* Some mutations (in values, comments) still load: the base itself is valid. */
	CHECK(loaded > 0);
	CHECK(loaded < 4000);
}

/* A symlink is another spelling of the same file or directory: refused like a duplicate. */
TEST(duplicates_through_symlinks)
{
	char dir[] = "/tmp/lv-cfgdup-XXXXXX", a[PATH_MAX], b[PATH_MAX], y[4 * PATH_MAX], err[2048];
	struct config c;
	CHECK(mkdtemp(dir) != NULL);
	snprintf(a, sizeof(a), "%s/a.db", dir);
	CHECK_INT(close(open(a, O_CREAT | O_WRONLY, 0600)), 0);
	snprintf(b, sizeof(b), "%s/l.db", dir);
	CHECK_INT(symlink(a, b), 0);
	snprintf(y, sizeof(y), "dbs:\n  - {path: %s, name: a, env: A}\n  - {path: %s, name: b, env: B}\n", a,
		 b);
	/* a symlink to the file itself is refused on its own (SQLite's -wal is beside the target) */
	CHECK_INT(config_load_string(y, "t.yml", NULL, &c, err, sizeof(err)), -1);
	CHECK(strstr(err, "t.yml:3:12: dbs[1].path: ") == err);
	CHECK(strstr(err, "l.db is a symlink to ") != NULL);
	/* the same file through a symlinked directory */
	char ld[PATH_MAX];
	snprintf(ld, sizeof(ld), "%s/ld", dir);
	CHECK_INT(symlink(dir, ld), 0);
	snprintf(y, sizeof(y), "dbs:\n  - {path: %s, name: a, env: A}\n  - {path: %s/a.db, name: b, env: B}\n",
		 a, ld);
	CHECK_INT(config_load_string(y, "t.yml", NULL, &c, err, sizeof(err)), -1);
	CHECK(strstr(err, "t.yml:3:12: dbs[1].path: ") == err);
	CHECK(strstr(err, "ld/a.db is the same file as dbs[0].path ") != NULL);
	unlink(ld);

	snprintf(a, sizeof(a), "%s/real", dir);
	CHECK_INT(mkdir(a, 0700), 0);
	snprintf(b, sizeof(b), "%s/link", dir);
	CHECK_INT(symlink(a, b), 0);
	snprintf(y, sizeof(y),
		 "dbs:\n  - {path: /d/a.db, replicas: [{path: %s/r}]}\n"
		 "  - {path: /d/b.db, replicas: [{path: %s/r}]}\n", a, b);
	CHECK_INT(config_load_string(y, "t.yml", NULL, &c, err, sizeof(err)), -1);
	CHECK(strstr(err, "t.yml:3:32: dbs[1].replicas[0]: writes to the same place as dbs[0].replicas[0] (line 2): ") == err);
	CHECK(strstr(err, "/real/r; give it its own path") != NULL);
	unlink(b);
	rmdir(a);
	snprintf(a, sizeof(a), "%s/a.db", dir);
	snprintf(b, sizeof(b), "%s/l.db", dir);
	unlink(a);
	unlink(b);
	rmdir(dir);
}

/* addr is split once, the same way for config and for the server (supervisor/http.c). */
TEST(addr_forms)
{
	static const struct {
		const char *addr, *host, *port; /* host NULL: refused */
	} cases[] = {
		{ ":9090", "", "9090" },
		{ "127.0.0.1:9090", "127.0.0.1", "9090" },
		{ "localhost:0", "localhost", "0" },
		{ "[::1]:9090", "::1", "9090" },
		{ "[]:80", "", "80" },
		{ "::1:9090", "::1", "9090" },
		{ "[::1", NULL, NULL },
		{ "[::1]", NULL, NULL },
		{ "::1]:80", NULL, NULL },
		{ "[::1]x:80", NULL, NULL },
		{ "[[::1]]:80", NULL, NULL },
		{ "localhost", NULL, NULL },
		{ "localhost:", NULL, NULL },
		{ ":65536", NULL, NULL },
		{ ":080080", NULL, NULL },
		{ ": 80", NULL, NULL },
		{ ":-1", NULL, NULL },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char host[64] = "?", port[16] = "?";
		int rc = config_addr_split(cases[i].addr, host, sizeof(host), port, sizeof(port));
		if (!cases[i].host) {
			if (rc != -1)
				FAIL("\"%s\" accepted as host \"%s\" port \"%s\"", cases[i].addr, host, port);
			continue;
		}
		if (rc != 0)
			FAIL("\"%s\" refused", cases[i].addr);
		CHECK_STR(host, cases[i].host);
		CHECK_STR(port, cases[i].port);
	}
}

/* An endpoint's or an S3 URL's host part: bad ports and brackets fail at load, not at the first request. */
TEST(authority_forms)
{
	static const struct {
		const char *a;
		bool ok;
	} cases[] = {
		{ "minio", true },          { "minio:9000", true },    { "10.0.0.200:9000", true },
		{ "[::1]", true },          { "[::1]:9100", true },    { "bkt.localhost:65535", true },
		{ "", false },              { ":9000", false },        { "minio:", false },
		{ "minio:0", false },       { "minio:65536", false },  { "minio:99999999999", false },
		{ "minio:+80", false },     { "minio:80x", false },    { "[::1", false },
		{ "[]:80", false },         { "[::1]x:80", false },    { "[[::1]]:80", false },
		{ "a]b:80", false },        { "::1", false },          { "[::1]:", false },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (cfg_authority_ok(cases[i].a, strlen(cases[i].a)) != cases[i].ok)
			FAIL("\"%s\" %s", cases[i].a, cases[i].ok ? "refused" : "accepted");
}

/*
 * realpath(3), counted: pathnorm_resolve calls it once per path element it
 * tries, so this counts path resolutions. This definition wins over libc's
 * for the whole test binary.
 */
static long realpath_calls;

char *realpath(const char *restrict path, char *restrict resolved)
{
	static char *(*next)(const char *restrict, char *restrict);
	if (!next)
		next = (char *(*)(const char *restrict, char *restrict))dlsym(RTLD_NEXT, "realpath");
	realpath_calls++;
	return next(path, resolved);
}

/* n databases under dir, two file replicas each; then extra (a last entry) if given. */
static char *many_dbs(const char *dir, int n, const char *extra)
{
	size_t cap = (size_t)n * 300 + 1024, len = 0;
	char *y = malloc(cap);
	CHECK(y != NULL);
	len += (size_t)snprintf(y + len, cap - len, "dbs:\n");
	for (int i = 0; i < n; i++)
		len += (size_t)snprintf(y + len, cap - len,
					"  - path: %s/d%d/app.db\n    replicas:\n"
					"      - {path: %s/r%d/a}\n      - {name: b, path: %s/r%d/b}\n",
					dir, i, dir, i, dir, i);
	if (extra)
		snprintf(y + len, cap - len, "%s", extra);
	return y;
}

/*
 * Duplicate files and replica directories are found with each path resolved
 * once: comparing every pair, resolving both paths each time, made loading
 * quadratic (2,000 databases took minutes). 200 databases with 2 replicas
 * each, a path 3 realpath calls deep: 1,800 calls, where the pairs took 598,200.
 */
TEST(each_path_is_resolved_once)
{
	char dir[] = "/tmp/lv-cfgscale-XXXXXX", link[64], extra[512], err[1024];
	const int n = 200, paths = n * 3;
	struct config c;
	CHECK(mkdtemp(dir) != NULL);
	snprintf(link, sizeof(link), "%s/link", dir);
	CHECK_INT(symlink(dir, link), 0);

	char *y = many_dbs(dir, n, NULL);
	realpath_calls = 0;
	c = load_ok(y);
	CHECK_INT(c.ndbs, n);
	config_release(&c);
	free(y);
	if (realpath_calls < paths) /* not counted: the test itself is broken */
		FAIL("realpath called %ld times for %d paths", realpath_calls, paths);
	if (realpath_calls > 4 * paths)
		FAIL("realpath called %ld times for %d paths: not once per path", realpath_calls, paths);

	/* the duplicates are still found, however far apart */
	snprintf(extra, sizeof(extra), "  - path: %s/d0/app.db\n", link);
	y = many_dbs(dir, n, extra);
	CHECK_INT(config_load_string(y, "t.yml", NULL, &c, err, sizeof(err)), -1);
	char want[512];
	snprintf(want, sizeof(want), "t.yml:802:11: dbs[200].path: %s/d0/app.db is the same file as "
		 "dbs[0].path %s/d0/app.db (line 2), through a symlink", link, dir);
	CHECK_STR(err, want);
	free(y);
	snprintf(extra, sizeof(extra), "  - path: /x/app.db\n    replicas:\n      - {path: %s/r7/b}\n",
		 link);
	y = many_dbs(dir, n, extra);
	CHECK_INT(config_load_string(y, "t.yml", NULL, &c, err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "t.yml:804:9: dbs[200].replicas[0]: writes to the same place as "
		 "dbs[7].replicas[1] (line 33): %s/r7/b; give it its own path", dir);
	CHECK_STR(err, want);
	free(y);
	unlink(link);
	rmdir(dir);
}

/* A replica URL refused with exactly this error. */
struct bad_url {
	const char *url, *err;
};

static void check_bad_urls(const struct bad_url *bad, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct cfg_replica r;
		char err[256] = "";
		if (config_replica_from_url(bad[i].url, &r, err, sizeof(err)) == 0)
			FAIL("%s was accepted", bad[i].url);
		CHECK_STR(err, bad[i].err);
	}
}

/*
 * Litestream v0.3.13 reads URLs with Go's net/url: an s3:// key prefix is the
 * decoded, cleaned path (no query, no fragment: it reads no query parameter);
 * a file:// directory is the URL re-assembled by Go's URL.String, escapes,
 * query and fragment kept. Each expectation below was checked against the
 * real Litestream binary.
 */
TEST(urls_parse_like_go_net_url)
{
	static const struct {
		const char *url, *path;
	} cases[] = {
		{ "s3://bkt/app?region=eu-west-1&endpoint=http://x:1&forcePathStyle=true&skipVerify=true", "app" },
		{ "s3://bkt/x%41y", "xAy" },
		{ "s3://bkt/db#main", "db" },
		{ "s3://bkt/a%2Fb%20c+d", "a/b c+d" },
		{ "s3://bkt/a/../c/./d/", "c/d" },
		{ "s3://bkt/../../x", "x" },
		{ "s3://bkt?x=1#y", "" },
		{ "s3://bkt/a@b", "a@b" },
		{ "s3://bkt/p#%41", "p" },
		{ "file:///var/b/x%41y", "/var/b/x%41y" },
		{ "file:///var/b/t%7e%5c", "/var/b/t%7e%5c" },
		{ "file:///var/b/a b%41", "/var/b/a%20bA" },
		{ "file:///var/b/q?x=1#frag", "/var/b/q?x=1#frag" },
		{ "file:///var/b/x#", "/var/b/x" },
		{ "file:///var/b/x?", "/var/b/x?" },
		{ "file:///var/b/x#a b", "/var/b/x#a%20b" },
		{ "file:///var/b/x?a b#c%41", "/var/b/x?a b#c%41" },
		{ "file:///var/b/x?a/../../y", "/var/y" },
		{ "file:///var/b/c/../d/./e/", "/var/b/d/e" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct cfg_replica r;
		char err[256];
		if (config_replica_from_url(cases[i].url, &r, err, sizeof(err)) != 0)
			FAIL("%s: %s", cases[i].url, err);
		if (strcmp(r.path, cases[i].path) != 0)
			FAIL("%s: path \"%s\", expected \"%s\"", cases[i].url, r.path, cases[i].path);
		if (r.type == REPLICA_S3) {
			/* The query is ignored, as Litestream ignores it. */
			CHECK_STR(r.bucket, "bkt");
			CHECK(r.endpoint == NULL);
			CHECK_STR(r.region, "us-east-1");
			CHECK_INT(r.force_path_style, 0);
		}
		config_replica_release(&r);
	}
	static const struct bad_url bad[] = {
		{ "s3://bkt/x%zz", "invalid replica URL \"s3://bkt/x%zz\": invalid URL escape \"%zz\"" },
		{ "s3://bkt/x%4", "invalid replica URL \"s3://bkt/x%4\": invalid URL escape \"%4\"" },
		{ "s3://bkt/x#%g1", "invalid replica URL \"s3://bkt/x#%g1\": invalid URL escape \"%g1\"" },
		{ "file:///x/%", "invalid replica URL \"file:///x/%\": invalid URL escape \"%\"" },
		{ "file:///x#%", "invalid replica URL \"file:///x#%\": invalid URL escape \"%\"" },
		{ "s3://bkt/a%00b", "invalid replica URL \"s3://bkt/a%00b\": the path decodes to a NUL byte (%00), which no S3 key may hold" },
		{ "s3://bkt/a\tb", "invalid replica URL: it contains a control character" },
		{ "s3://u:p@bkt/x?y", "a replica URL must not carry credentials (user@host); use access-key-id and secret-access-key" },
	};
	check_bad_urls(bad, sizeof(bad) / sizeof(bad[0]));
}

/*
 * Spellings Litestream v0.3.13 replicates to (checked with its binary): Go's
 * net/url lowercases the scheme, reads "file:/DIR" as the path /DIR, and a
 * file URL's host becomes the directory's first part (path.Clean("//h/p")).
 * An AWS bucket's port is dropped (s3.ParseHost: net.SplitHostPort).
 */
TEST(url_spellings_litestream_accepts)
{
	static const struct {
		const char *url, *bucket, *path;
	} cases[] = {
		{ "file:/var/b/r1", NULL, "/var/b/r1" },
		{ "file://var/b/r2", NULL, "/var/b/r2" },
		{ "file://host", NULL, "/host" },
		{ "file://h/../x", NULL, "/x" },
		{ "FILE:///var/b/r3", NULL, "/var/b/r3" },
		{ "File:/var/b/q?x#y", NULL, "/var/b/q?x#y" },
		{ "S3://bkt/p", "bkt", "p" },
		{ "s3://bkt:9000/p", "bkt", "p" },
		{ "s3://[::1]:9000/p", "::1", "p" },
		{ "s3://[::1]/p", "[::1]", "p" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct cfg_replica r;
		char err[256];
		if (config_replica_from_url(cases[i].url, &r, err, sizeof(err)) != 0)
			FAIL("%s: %s", cases[i].url, err);
		if (strcmp(r.path, cases[i].path) != 0)
			FAIL("%s: path \"%s\", expected \"%s\"", cases[i].url, r.path, cases[i].path);
		CHECK_INT(r.type, cases[i].bucket ? REPLICA_S3 : REPLICA_FILE);
		if (cases[i].bucket) {
			CHECK_STR(r.bucket, cases[i].bucket);
			CHECK(r.endpoint == NULL); /* the port is no endpoint: endpoint: says it */
		}
		config_replica_release(&r);
	}
	static const struct bad_url bad[] = {
		{ "file://a:80/p", "invalid file URL \"file://a:80/p\" (expected file:///ABSOLUTE/DIR)" },
		{ "file://a%41/p", "invalid file URL \"file://a%41/p\" (expected file:///ABSOLUTE/DIR)" },
		{ "file:rel?x", "invalid file URL \"file:rel?x\": a relative one takes no ?query or "
			      "#fragment (use path: DIR)" },
		{ "GS://b/p", "replica URL scheme \"GS\" is not supported by litevisor" },
	};
	check_bad_urls(bad, sizeof(bad) / sizeof(bad[0]));

	/* file:REL and file:~/DIR: relative to the working directory or the home, as a
	 * path: key, as Litestream v0.3.13 reads them (QA174 D2: refused) */
	CHECK(chdir("/tmp") == 0);
	setenv("PWD", "/tmp", 1);
	struct passwd *pw = getpwuid(getuid());
	char home[600];
	snprintf(home, sizeof(home), "%s/bk", pw && pw->pw_dir && *pw->pw_dir ? pw->pw_dir : getenv("HOME"));
	static const struct {
		const char *url, *path;
	} rel[] = { { "file:rel", "/tmp/rel" }, { "FILE:./a/../b/", "/tmp/b" }, { "file:~/bk", NULL } };
	for (size_t i = 0; i < sizeof(rel) / sizeof(rel[0]); i++) {
		struct cfg_replica r;
		char err[256];
		if (config_replica_from_url(rel[i].url, &r, err, sizeof(err)) != 0)
			FAIL("%s: %s", rel[i].url, err);
		CHECK_INT(r.type, REPLICA_FILE);
		CHECK_STR(r.path, rel[i].path ? rel[i].path : home);
		config_replica_release(&r);
	}
}

/*
 * Values Litestream v0.3.13 runs with and whose meaning is sane: loaded with
 * that meaning (each checked with its binary, see docs/config.md).
 */
TEST(litestream_values_accepted)
{
	/* checkpoint-interval: 0 turns time-based checkpoints off */
	struct config c = load_ok("dbs:\n  - path: /d/app.db\n    checkpoint-interval: 0s\n"
				  "    replicas:\n      - url: s3://b/p\n");
	CHECK_INT(c.dbs[0].checkpoint_interval_ms, 0);
	config_release(&c);
	/* a max below the min: checkpoints (RESTART in Litestream) from max pages on */
	c = load_ok("dbs:\n  - path: /d/app.db\n    max-checkpoint-page-count: 100\n"
		    "    replicas:\n      - url: s3://b/p\n");
	CHECK_INT(c.dbs[0].max_checkpoint_page_count, 100);
	CHECK_INT(c.dbs[0].min_checkpoint_page_count, 1000);
	config_release(&c);
	/* Litestream's S3 keys on a replica that is plainly a file one: ignored there, dropped here */
	c = load_ok("dbs:\n  - path: /d/app.db\n    replicas:\n      - url: file:///b/r\n"
		    "        region: eu-west-1\n        endpoint: http://x:9000\n        skip-verify: true\n"
		    "        force-path-style: true\n        access-key-id: AKIA\n"
		    "        secret-access-key: s\n        bucket: b\n"
		    "      - type: file\n        name: q\n        path: /b/q\n        region: eu-west-1\n        bucket: b\n");
	for (size_t i = 0; i < 2; i++) {
		const struct cfg_replica *r = &c.dbs[0].replicas[i];
		CHECK_INT(r->type, REPLICA_FILE);
		CHECK(!r->region && !r->endpoint && !r->bucket && !r->skip_verify && !r->force_path_style);
		CHECK(!r->access_key_id.value && !r->secret_access_key.value);
	}
	CHECK_STR(c.dbs[0].replicas[0].path, "/b/r");
	config_release(&c);
	/* no value (null, empty, an unset variable) is the default: yaml.v2 leaves the pointer nil */
	unsetenv("LITEVISOR_TEST_UNSET_DB");
	c = load_ok("dbs:\n  - path: /d/app.db\n    monitor-interval: ~\n    min-checkpoint-page-count:\n"
		    "    replicas:\n      - url: s3://b/p\n        retention: $LITEVISOR_TEST_UNSET_DB\n"
		    "        sync-interval: null\n        force-path-style:\n---\n");
	CHECK_INT(c.dbs[0].monitor_interval_ms, 1000);
	CHECK_INT(c.dbs[0].min_checkpoint_page_count, 1000);
	CHECK_INT(c.dbs[0].replicas[0].retention_ms, 86400000);
	CHECK_INT(c.dbs[0].replicas[0].sync_interval_ms, 1000);
	CHECK(!c.dbs[0].replicas[0].force_path_style);
	config_release(&c);
	/* a trailing empty document changes nothing in Litestream either */
	c = load_ok("dbs:\n  - path: /d/app.db\n---\n# nothing\n...\n---\nnull\n");
	CHECK_INT(c.ndbs, 1);
	config_release(&c);
}

UNIT_MAIN(T(litestream_full_example), T(seed_topology_from_node_105), T(node_rule_follows_top_level_node),
	  T(store_inheritance_and_overrides), T(url_shortcuts), T(urls_parse_like_go_net_url), T(url_spellings_litestream_accepts), T(litestream_values_accepted), T(url_parts_versus_explicit_keys),
	  T(defaults_match_config_h), T(same_file_names_in_other_directories_get_distinct_default_names),
	  T(replicas_sharing_a_default_name_get_distinct_names),
	  T(litevisor_sections), T(env_expansion_in_values),
	  T(env_values_trimmed_in_plain_scalars_as_litestream), T(env_values_in_quotes_read_as_yaml_reads_them), T(env_values_empty_in_quotes_or_null_as_litestream), T(yaml11_integers_and_booleans),
	  T(anchors_and_aliases),
	  T(default_path_falls_back_to_litestreams), T(default_path_order), T(default_path_empty_is_an_error), T(file_errors_name_the_file), T(bad_configs_give_exact_errors), T(duplicates_through_symlinks),
	  T(credentials_never_in_errors), T(secret_files_are_checked_at_load),
	  T(each_path_is_resolved_once), T(addr_forms), T(authority_forms),
	  T(survives_mutated_input))
