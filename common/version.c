/* version.c — the build's version stamp (LITEVISOR_VERSION comes from the Makefile). */
#include "common/version.h"

#include "common/banned.h"

#ifndef LITEVISOR_VERSION
#define LITEVISOR_VERSION "unknown"
#endif

const char *litevisor_version(void)
{
	return LITEVISOR_VERSION;
}
