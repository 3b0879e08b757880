/* lazy_mhd.c — the libmicrohttpd functions litevisor calls, forwarded to the loaded library. */
#include <stdarg.h>
#include <stdint.h>
#include <sys/socket.h>
#include <microhttpd.h>

#include "common/lazy_mhd.h"
#include "common/lazylib.h"
#include "common/banned.h"

#ifndef LAZY_MHD_SONAME
#define LAZY_MHD_SONAME "libmicrohttpd.so.12"
#endif

static struct {
	__typeof__(MHD_start_daemon_va) *MHD_start_daemon_va;
	__typeof__(MHD_stop_daemon) *MHD_stop_daemon;
	__typeof__(MHD_get_daemon_info) *MHD_get_daemon_info;
	__typeof__(MHD_create_response_from_buffer) *MHD_create_response_from_buffer;
	__typeof__(MHD_add_response_header) *MHD_add_response_header;
	__typeof__(MHD_queue_response) *MHD_queue_response;
	__typeof__(MHD_destroy_response) *MHD_destroy_response;
	__typeof__(MHD_get_version) *MHD_get_version;
	__typeof__(MHD_lookup_connection_value) *MHD_lookup_connection_value;
	__typeof__(MHD_get_connection_info) *MHD_get_connection_info;
} fn;

#define SYM(n) LAZYLIB_SYM(fn, n)
static const struct lazylib_sym syms[] = {
	SYM(MHD_start_daemon_va),         SYM(MHD_stop_daemon),         SYM(MHD_get_daemon_info),
	SYM(MHD_create_response_from_buffer), SYM(MHD_add_response_header), SYM(MHD_queue_response),
	SYM(MHD_destroy_response),       SYM(MHD_get_version),     SYM(MHD_lookup_connection_value),
	SYM(MHD_get_connection_info),
};

static struct lazylib lib = LAZYLIB_INIT(LAZY_MHD_SONAME, "libmicrohttpd12", syms, NULL);

#define F(n) LAZYLIB_FN(lib, fn, n)

int lazy_mhd_load(char *err, size_t errlen)
{
	return lazylib_load(&lib, err, errlen);
}

/* The option list is handed on whole, through the library's own va_list entry point. */
struct MHD_Daemon *MHD_start_daemon(unsigned int flags, uint16_t port, MHD_AcceptPolicyCallback apc,
				    void *apc_cls, MHD_AccessHandlerCallback dh, void *dh_cls, ...)
{
	va_list ap;
	va_start(ap, dh_cls);
	struct MHD_Daemon *d = F(MHD_start_daemon_va)(flags, port, apc, apc_cls, dh, dh_cls, ap);
	va_end(ap);
	return d;
}

void MHD_stop_daemon(struct MHD_Daemon *daemon) { F(MHD_stop_daemon)(daemon); }

/* Only info types that take no further argument are asked for (BIND_PORT, …). */
const union MHD_DaemonInfo *MHD_get_daemon_info(struct MHD_Daemon *daemon,
						enum MHD_DaemonInfoType info_type, ...)
{
	return F(MHD_get_daemon_info)(daemon, info_type);
}

struct MHD_Response *MHD_create_response_from_buffer(size_t size, void *buffer,
						     enum MHD_ResponseMemoryMode mode)
{
	return F(MHD_create_response_from_buffer)(size, buffer, mode);
}

enum MHD_Result MHD_add_response_header(struct MHD_Response *response, const char *header,
					const char *content)
{
	return F(MHD_add_response_header)(response, header, content);
}

enum MHD_Result MHD_queue_response(struct MHD_Connection *connection, unsigned int status_code,
				   struct MHD_Response *response)
{
	return F(MHD_queue_response)(connection, status_code, response);
}

void MHD_destroy_response(struct MHD_Response *response) { F(MHD_destroy_response)(response); }

const char *MHD_get_version(void) { return F(MHD_get_version)(); }

const char *MHD_lookup_connection_value(struct MHD_Connection *connection,
					enum MHD_ValueKind kind, const char *key)
{
	return F(MHD_lookup_connection_value)(connection, kind, key);
}

/* Only info types that take no further argument are asked for (CONNECTION_FD, …). */
const union MHD_ConnectionInfo *MHD_get_connection_info(struct MHD_Connection *connection,
							 enum MHD_ConnectionInfoType info_type, ...)
{
	return F(MHD_get_connection_info)(connection, info_type);
}
