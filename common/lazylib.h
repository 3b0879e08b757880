/*
 * lazylib.h — shared libraries loaded on first use instead of at exec.
 *
 * libcurl (with its ~30 dependencies), libmicrohttpd (with GnuTLS) and
 * libcrypto cost about 11 ms of dynamic linking at every start (16 ms
 * against 5 ms here), and many invocations need none of them: a restore from
 * a file replica, `config`, a `run` with neither S3 nor an HTTP address. So
 * the binary is not linked against them: common/lazy_{curl,crypto,mhd}.c
 * define the functions litevisor calls, with the libraries' own prototypes,
 * and forward each call through a pointer resolved by dlopen/dlsym (the
 * pattern systemd uses for its optional libraries). Callers include the
 * libraries' headers and call them as usual.
 *
 * Contract: a caller loads a library (lazy_curl_load, lazy_crypto_load,
 * lazy_mhd_load) at the point where it knows it needs it, before the first
 * call into it, and handles the failure there with a message naming the
 * library. Calling a forwarded function before its library is loaded is a
 * programming error: it aborts with a message rather than crash on NULL.
 * Loading is idempotent and thread-safe; a library once loaded stays loaded.
 */
#ifndef LITEVISOR_LAZYLIB_H
#define LITEVISOR_LAZYLIB_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

struct lazylib_sym {
	const char *name;
	void **slot; /* where the resolved address goes */
};

struct lazylib {
	const char *soname;  /* e.g. "libcurl.so.4" (the ABI the headers describe) */
	const char *package; /* the Debian package that ships it, for the error */
	const struct lazylib_sym *syms;
	size_t nsyms;
	int (*init)(char *err, size_t errlen); /* after loading (may be NULL) */
	/* state, guarded by lock */
	pthread_mutex_t lock;
	bool tried, loaded;
	char error[512];
};

#define LAZYLIB_INIT(so, pkg, symtab, initfn)                                                \
	{ .soname = (so), .package = (pkg), .syms = (symtab),                                 \
	  .nsyms = sizeof(symtab) / sizeof((symtab)[0]), .init = (initfn),                    \
	  .lock = PTHREAD_MUTEX_INITIALIZER }

/* One entry of a symbol table: the function named n, resolved into table.n. */
#define LAZYLIB_SYM(table, n) { #n, (void **)&(table).n }

/* The pointer to call for n, or abort if lib was never loaded. */
#define LAZYLIB_FN(lib, table, n) ((table).n ? (table).n : (lazylib_unloaded(&(lib), #n), (table).n))

/*
 * Load lib and resolve all its symbols, once; later calls return the first
 * outcome. Returns 0, or -1 with a message naming the library, the cause
 * (dlerror) and the package to install copied into err.
 */
int lazylib_load(struct lazylib *lib, char *err, size_t errlen);

/* Abort with a message: fn of lib was called before lib was loaded. */
void lazylib_unloaded(const struct lazylib *lib, const char *fn) __attribute__((noreturn));

#endif
