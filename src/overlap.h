/* The overlap check of a step: no array lrcore writes (params, buffers) may share memory
 * with any other array of the call; read-only arrays (grads) may overlap each other.
 *
 * Sorted by start address, a span overlaps an earlier one iff it starts before the largest
 * end seen so far (among all spans for a written one, among written spans for a read one):
 * O(n log n) rather than comparing every pair. The sort is an inline heap sort, since a
 * generic qsort through a comparator pointer cost more than the kernels on small arrays.
 */
#ifndef LRCORE_OVERLAP_H
#define LRCORE_OVERLAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uintptr_t start, end;    /* [start, end) in bytes; empty arrays are left out */
    int written;
} lrc_span;

static inline void lrc_sift_down(lrc_span *a, ptrdiff_t root, ptrdiff_t n)
{
    const lrc_span top = a[root];
    for (;;) {
        ptrdiff_t child = 2 * root + 1;
        if (child >= n) break;
        if (child + 1 < n && a[child + 1].start > a[child].start) child++;
        if (a[child].start <= top.start) break;
        a[root] = a[child];
        root = child;
    }
    a[root] = top;
}

static inline void lrc_sort_spans(lrc_span *a, ptrdiff_t n)
{
    ptrdiff_t i;
    for (i = 1; i < n && a[i - 1].start <= a[i].start; i++) {}
    if (i >= n) return;                     /* already in order: common for views of one buffer */
    for (i = n / 2 - 1; i >= 0; i--) lrc_sift_down(a, i, n);
    for (i = n - 1; i > 0; i--) {
        const lrc_span t = a[0];
        a[0] = a[i];
        a[i] = t;
        lrc_sift_down(a, 0, i);
    }
}

/* 1 when no written span overlaps another span; reorders `spans`. */
static inline int lrc_spans_disjoint(lrc_span *spans, ptrdiff_t n)
{
    uintptr_t end_any = 0, end_written = 0;
    lrc_sort_spans(spans, n);
    for (ptrdiff_t i = 0; i < n; i++) {
        if (spans[i].start < (spans[i].written ? end_any : end_written)) return 0;
        if (spans[i].end > end_any) end_any = spans[i].end;
        if (spans[i].written && spans[i].end > end_written) end_written = spans[i].end;
    }
    return 1;
}

#endif /* LRCORE_OVERLAP_H */
