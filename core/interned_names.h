/* core/interned_names.h — the attribute names looked up once or more per connection or call (protocol callbacks,
 * transport and server methods, a file object's fileno), interned once per module state: a str made from a C string
 * on each call is hashed again and misses the type attribute cache, which only takes interned names. */
#ifndef ZL_INTERNED_NAMES_H
#define ZL_INTERNED_NAMES_H

#include <Python.h>

#define ZL_INTERNED_NAMES(X) \
    X(connection_made)       \
    X(connection_lost)       \
    X(data_received)         \
    X(eof_received)          \
    X(get_buffer)            \
    X(buffer_updated)        \
    X(_start_reading)        \
    X(_call_connection_lost) \
    X(_attach)               \
    X(_detach)               \
    X(_deliver_held)         \
    X(fileno)

typedef enum zl_name_id {
#define ZL_NAME_ID(name) ZL_NAME_##name,
    ZL_INTERNED_NAMES(ZL_NAME_ID)
#undef ZL_NAME_ID
    ZL_NAME_COUNT
} zl_name_id;

/* The interned str `name` (borrowed) of a module state: ZL_NAME(loop->state, connection_made). */
#define ZL_NAME(state, name) ((state)->names[ZL_NAME_##name])

/* Fill names[ZL_NAME_COUNT] with new references; -1 with an exception set (the caller clears what was made). */
static inline int
zl_interned_names_init(PyObject **names)
{
    static const char *const strings[ZL_NAME_COUNT] = {
#define ZL_NAME_STRING(name) #name,
        ZL_INTERNED_NAMES(ZL_NAME_STRING)
#undef ZL_NAME_STRING
    };
    for (int i = 0; i < ZL_NAME_COUNT; i++) {
        names[i] = PyUnicode_InternFromString(strings[i]);
        if (names[i] == NULL) {
            return -1;
        }
    }
    return 0;
}

#endif /* ZL_INTERNED_NAMES_H */
