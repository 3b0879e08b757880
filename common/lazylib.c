/* lazylib.c — dlopen once, resolve every symbol, remember the outcome. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/lazylib.h"
#include "common/banned.h"

static int load_locked(struct lazylib *lib)
{
	/* RTLD_LOCAL: our own definitions of these names stay ours, theirs stay theirs. */
	void *h = dlopen(lib->soname, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		snprintf(lib->error, sizeof(lib->error), "cannot load %s (%s): install the %s package",
			 lib->soname, dlerror(), lib->package);
		return -1;
	}
	for (size_t i = 0; i < lib->nsyms; i++) {
		void *p = dlsym(h, lib->syms[i].name);
		if (!p) {
			snprintf(lib->error, sizeof(lib->error), "%s has no %s: is the %s package too old?",
				 lib->soname, lib->syms[i].name, lib->package);
			for (size_t j = 0; j < i; j++)
				*lib->syms[j].slot = NULL;
			dlclose(h);
			return -1;
		}
		*lib->syms[i].slot = p;
	}
	if (lib->init && lib->init(lib->error, sizeof(lib->error)) < 0)
		return -1; /* its symbols stay resolved but the library counts as not loaded */
	return 0;
}

int lazylib_load(struct lazylib *lib, char *err, size_t errlen)
{
	pthread_mutex_lock(&lib->lock);
	if (!lib->tried) {
		lib->tried = true;
		lib->loaded = load_locked(lib) == 0;
	}
	bool ok = lib->loaded;
	if (!ok && err && errlen)
		snprintf(err, errlen, "%s", lib->error);
	pthread_mutex_unlock(&lib->lock);
	return ok ? 0 : -1;
}

void lazylib_unloaded(const struct lazylib *lib, const char *fn)
{
	fprintf(stderr, "litevisor: internal error: %s called before %s was loaded\n", fn, lib->soname);
	abort();
}
