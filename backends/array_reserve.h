/* backends/array_reserve.h — room in the backends' growable arrays (the event backend's fired list, the uring
 * backend's armed accepts and collected completions): doubled from a first capacity, by realloc. */
#ifndef ZL_ARRAY_RESERVE_H
#define ZL_ARRAY_RESERVE_H

#include <errno.h>
#include <limits.h>
#include <stdlib.h>

/* Make *items (elements of size bytes, *capacity of them; NULL: none yet) hold at least need elements: the
 * capacity doubles from *capacity, or from first_capacity the first time. 0, or -ENOMEM with nothing changed. */
static inline int
zl_array_reserve(void **items, int *capacity, int need, size_t size, int first_capacity)
{
    if (*items != NULL && *capacity >= need) {
        return 0;
    }
    int cap = *capacity ? *capacity : first_capacity;
    while (cap < need) {
        if (cap > INT_MAX / 2) {
            return -ENOMEM;
        }
        cap *= 2;
    }
    void *grown = realloc(*items, (size_t)cap * size);
    if (grown == NULL) {
        return -ENOMEM;
    }
    *items = grown;
    *capacity = cap;
    return 0;
}

#endif /* ZL_ARRAY_RESERVE_H */
