/* core/backend_registry.c — the table of compiled-in backends and lookup by name.
 * Which entries exist is decided by ./configure (ZL_HAVE_* in config.h). */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#include <stddef.h>
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
