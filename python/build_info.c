/* python/build_info.c — zloop._zloop._build_info(): what this extension was built with, as the compiled code
 * itself knows it (config.h, the library headers) plus the libuv and libevent versions loaded at run time.
 * `python -m zloop info` prints it. */
#ifdef HAVE_CONFIG_H   /* absent in the C fuzz harness, which links this file alone with the core */
#include "config.h"
#endif

#include "../core/zloop.h"

#ifdef ZL_HAVE_UV
#include <uv.h>
#endif
#ifdef ZL_HAVE_EVENT
#include <event2/event.h>
#endif

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "unknown"
#endif
#ifndef ZL_DEFAULT_BACKEND
#define ZL_DEFAULT_BACKEND "native"   /* as core/backend_registry.c without config.h */
#endif
#ifndef ZL_CONFIGURE_ARGS
#define ZL_CONFIGURE_ARGS ""
#endif

#if defined(__clang__) || !defined(__GNUC__)
#define ZL_COMPILER __VERSION__
#else
#define ZL_COMPILER "gcc " __VERSION__
#endif

#if defined(__SANITIZE_ADDRESS__)
#define ZL_BUILT_WITH_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ZL_BUILT_WITH_ASAN 1
#endif
#endif
#ifndef ZL_BUILT_WITH_ASAN
#define ZL_BUILT_WITH_ASAN 0
#endif

/* {"compiled": version of the headers, "runtime": version of the library loaded}, or None if not built in. */
static PyObject *
library_versions(const char *compiled, const char *runtime)
{
    if (compiled == NULL) {
        Py_RETURN_NONE;
    }
    return Py_BuildValue("{s:s,s:s}", "compiled", compiled, "runtime", runtime);
}

PyObject *
zl_build_info(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    const char *uv_compiled = NULL, *uv_runtime = NULL, *event_compiled = NULL, *event_runtime = NULL;
#ifdef ZL_HAVE_UV
#define ZL_STR2(x) #x
#define ZL_STR(x) ZL_STR2(x)
    uv_compiled = ZL_STR(UV_VERSION_MAJOR) "." ZL_STR(UV_VERSION_MINOR) "." ZL_STR(UV_VERSION_PATCH);
    uv_runtime = uv_version_string();
#endif
#ifdef ZL_HAVE_EVENT
    event_compiled = EVENT__VERSION;
    event_runtime = event_get_version();
#endif
    PyObject *uv = library_versions(uv_compiled, uv_runtime);
    PyObject *event = library_versions(event_compiled, event_runtime);
    PyObject *info = NULL;
    if (uv != NULL && event != NULL) {
#if defined(__linux__)
        const char *native = "epoll";
#else
        const char *native = "kqueue";
#endif
        info = Py_BuildValue("{s:s,s:s,s:s,s:O,s:O,s:O,s:s,s:s}",
                             "version", PACKAGE_VERSION,
                             "default_backend", ZL_DEFAULT_BACKEND,
                             "native", native,
                             "asan", ZL_BUILT_WITH_ASAN ? Py_True : Py_False,
                             "libuv", uv,
                             "libevent", event,
                             "configure_args", ZL_CONFIGURE_ARGS,
                             "compiler", ZL_COMPILER);
    }
    Py_XDECREF(uv);
    Py_XDECREF(event);
    return info;
}
