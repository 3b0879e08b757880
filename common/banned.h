/*
 * banned.h — calls the house style forbids (style.md §10).
 *
 * Include it last, after every system header: a use of a banned name after
 * this point is a compile error. Use the bounded or reentrant forms instead
 * (snprintf, strtol/strtoull, gmtime_r, localtime_r, strtok_r, memcpy with a
 * checked length).
 */
#ifndef LITEVISOR_BANNED_H
#define LITEVISOR_BANNED_H
#pragma GCC poison strcpy strcat sprintf vsprintf strtok atoi atol gmtime localtime
#endif
