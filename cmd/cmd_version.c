/* cmd_version.c — `litevisor version`. */
#include <stdio.h>

#include <curl/curl.h>
#include <jansson.h>
#include <lz4.h>
#include <microhttpd.h>
#include <sqlite3.h>
#include <yaml.h>

#include "cmd/commands.h"
#include "common/lazy_curl.h"
#include "common/lazy_mhd.h"
#include "common/version.h"
#include "common/banned.h"

static int run_version(int argc, char **argv)
{
	static const struct flag flags[] = { { 0 } };
	bool help;
	int i = cli_parse(&cmd_version, flags, argc, argv, &help);
	if (i < 0)
		return help ? 0 : EXIT_USAGE;
	if (i < argc)
		return cli_usage_error(&cmd_version, "unexpected argument \"%s\"", argv[i]);
	char why[512];
	const char *curl = lazy_curl_load(why, sizeof(why)) == 0 ? curl_version() : why;
	char mwhy[256];
	const char *mhd = lazy_mhd_load(mwhy, sizeof(mwhy)) == 0 ? MHD_get_version() : mwhy;
	printf("litevisor %s (sqlite %s, %s, lz4 %s, jansson %s, libyaml %s, libmicrohttpd %s)\n",
	       litevisor_version(), sqlite3_libversion(), curl, LZ4_versionString(),
	       jansson_version_str(), yaml_get_version_string(), mhd);
	return 0;
}

const struct command cmd_version = {
	.name = "version",
	.summary = "print the version of litevisor and its libraries",
	.usage = "litevisor version",
	.run = run_version,
};
