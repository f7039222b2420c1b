/* core/backend_registry.c — the table of compiled-in backends and lookup by name.
 * Which entries exist is decided by ./configure (ZL_HAVE_* in config.h). */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "backend.h"

#ifndef ZL_DEFAULT_BACKEND
#define ZL_DEFAULT_BACKEND "native"
#endif

const zl_backend_ops *const zl_backend_table[] = {
    &zl_backend_native,
#ifdef ZL_HAVE_UV
    &zl_backend_uv,
#endif
#ifdef ZL_HAVE_EVENT
    &zl_backend_event,
#endif
#ifdef ZL_HAVE_URING
    &zl_backend_uring,
#endif
    NULL,
};

const zl_backend_ops *
zl_backend_find(const char *name)
{
    for (size_t i = 0; zl_backend_table[i] != NULL; i++) {
        if (strcmp(zl_backend_table[i]->name, name) == 0) {
            return zl_backend_table[i];
        }
    }
    return NULL;
}

const char *
zl_backend_default_name(void)
{
    if (zl_backend_find(ZL_DEFAULT_BACKEND) != NULL) {
        return ZL_DEFAULT_BACKEND;
    }
    return zl_backend_table[0]->name;
}

#ifdef ZL_HAVE_URING
void zl_uring_refusal_reason(int err, char *buf, size_t len);   /* backends/uring/uring_ring.c */
#endif

/* Append text to the message in why (always NUL-terminated, truncated when full). */
static void
why_append(char *why, size_t why_len, const char *text)
{
    size_t used = strlen(why);
    if (used + 1 < why_len) {
        snprintf(why + used, why_len - used, "%s", text);
    }
}

/* The names of the compiled-in backends, comma-separated, after the message in why. */
static void
why_append_available(char *why, size_t why_len)
{
    why_append(why, why_len, "; available: ");
    for (size_t i = 0; zl_backend_table[i] != NULL; i++) {
        why_append(why, why_len, i ? ", " : "");
        why_append(why, why_len, zl_backend_table[i]->name);
    }
}

/* Why ops->create failed with err, after the message in why. */
static void
why_append_refusal(const zl_backend_ops *ops, int err, char *why, size_t why_len)
{
    char reason[256];
    snprintf(reason, sizeof(reason), "%s", strerror(err));
#ifdef ZL_HAVE_URING
    if (ops == &zl_backend_uring) {
        zl_uring_refusal_reason(err, reason, sizeof(reason));
    }
#endif
    why_append(why, why_len, why[0] ? "; " : "");
    why_append(why, why_len, "backend '");
    why_append(why, why_len, ops->name);
    why_append(why, why_len, "' unavailable: ");
    why_append(why, why_len, reason);
}

zl_backend *
zl_backend_open(const char *spec, const zl_backend_ops **ops, char *why, size_t why_len)
{
    int last_error = 0;
    why[0] = '\0';
    *ops = NULL;
    for (const char *name = spec;; name++) {
        const char *end = strchr(name, ',');
        size_t len = end ? (size_t)(end - name) : strlen(name);
        for (size_t i = 0; zl_backend_table[i] != NULL; i++) {
            const zl_backend_ops *candidate = zl_backend_table[i];
            if (strlen(candidate->name) != len || strncmp(candidate->name, name, len) != 0) {
                continue;
            }
            zl_backend *backend = candidate->create();
            if (backend != NULL) {
                *ops = candidate;
                return backend;
            }
            last_error = errno;
            *ops = candidate;
            why_append_refusal(candidate, last_error, why, why_len);
        }
        if (end == NULL) {
            break;
        }
        name = end;
    }
    if (*ops == NULL) {
        snprintf(why, why_len, "unknown zloop backend '%s'", spec);
        why_append_available(why, why_len);
        last_error = EINVAL;
    }
    errno = last_error;
    return NULL;
}
