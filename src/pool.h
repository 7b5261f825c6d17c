/* lrcore's thread pool: a large call's chunks are claimed one at a time from a shared counter
 * by the calling thread and by whichever pool workers are running.
 *
 * Why not OpenMP: a static split makes the caller wait for a worker that another process has
 * pushed off its core (2 threads ran up to 10x slower than 1 under load), an OpenMP team's end
 * barrier waits for every team thread even if it never got to run, and libgomp hangs a forked
 * child that enters a parallel region. Here
 *   - chunks are claimed dynamically, so a descheduled worker takes no share of the work;
 *   - the caller starts at once and, when the counter is exhausted, waits only for workers that
 *     joined the job and are finishing a chunk they claimed (a worker that wakes late finds the
 *     job closed and goes back to sleep);
 *   - idle workers poll for at most LRC_SPIN_NS, then sleep on a condition variable (no long
 *     spin-waiting);
 *   - a fork resets the pool in the child (pthread_atfork), which starts new workers when it
 *     next needs them;
 *   - the pool serves one call at a time: a call that finds it busy (another thread's step)
 *     runs on its own thread, so steps on different states still run in parallel.
 * Beside torch (lrcore.torch turns it on: lrc_pool_share_openmp), the chunks are claimed the
 * same way by the team of a parallel region of the OpenMP runtime torch has loaded, if it
 * exports GOMP_parallel (libgomp; LLVM's and Intel's runtimes export it for compatibility).
 * That runtime's threads keep polling for milliseconds after torch's backward; with a pool
 * of its own, lrcore's step then had one core fewer (at 2 threads on 2 cores, 0.8 ms more per
 * step of a Transformer than torch's fused Adam). The team's end barrier waits for a thread
 * another process has pushed off its core, which lrcore's own pool never does: the price, paid
 * only where torch's own ops pay it too. A forked child goes back to lrcore's own pool (an
 * OpenMP runtime the parent used can hang in the child).
 * Which thread runs which chunk never changes what is computed (the kernels are element-wise,
 * and a worker runs a job under the caller's floating-point control: rounding mode and
 * flush-to-zero), so results are bit-identical for any thread count.
 *
 * Without POSIX threads (Windows) every call runs on the calling thread.
 */
#ifndef LRCORE_POOL_H
#define LRCORE_POOL_H

#include <stddef.h>
#include <stdint.h>

/* Work on chunk number `chunk` of a job; called once per chunk, from any thread. */
typedef void (*lrc_chunk_fn)(void *ctx, ptrdiff_t chunk);

/* The largest thread count set_num_threads accepts: more threads than this cannot help a
 * memory-bound kernel, and each one is a real OS thread. */
#define LRC_MAX_THREADS 1024

static inline void lrc_run_serial(ptrdiff_t chunks, lrc_chunk_fn fn, void *ctx)
{
    for (ptrdiff_t c = 0; c < chunks; c++) fn(ctx, c);
}

#if defined(_WIN32) || defined(LRC_NO_THREADS)

#define LRC_THREADING "none"
static inline void lrc_pool_run(int threads, ptrdiff_t chunks, lrc_chunk_fn fn, void *ctx)
{
    (void)threads;
    lrc_run_serial(chunks, fn, ctx);
}
static inline int lrc_pool_workers(void) { return 0; }
static inline int lrc_pool_share_openmp(int share) { (void)share; return 0; }
static inline int lrc_pool_openmp_shared(void) { return 0; }

#else

#include <dlfcn.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>

#include "fpcontrol.h"

#define LRC_THREADING "pthreads"

typedef struct {
    lrc_chunk_fn fn;
    void *ctx;
    ptrdiff_t chunks;
    int helpers;            /* workers 0 .. helpers-1 may join */
    lrc_fp_control fp;      /* the caller's, for the workers that join */
} lrc_job;

/* state: generation << 32 | LRC_OPEN | number of workers that joined. A worker joins with a
 * compare-exchange that succeeds only while the job of the generation it saw is open, so a
 * late worker can never join (and read the stack-allocated job of) a later call. */
#define LRC_OPEN ((uint64_t)1 << 31)
#define LRC_JOINED_MASK (LRC_OPEN - 1)

/* How long a thread polls for what it waits on before it sleeps. A wake-up from sleep costs
 * tens of microseconds, which a worker polling between back-to-back steps saves (LRC_SPIN_NS),
 * and so does a caller polling for a worker's last chunk; the caller polls less
 * (LRC_CALLER_SPIN_NS) since a worker that is late has usually been descheduled, and it
 * returns sooner once the caller sleeps and frees its core. */
#define LRC_SPIN_NS 50000
#define LRC_CALLER_SPIN_NS 10000

static inline uint64_t lrc_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void lrc_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static struct {
    pthread_mutex_t mu;
    pthread_cond_t wake;            /* workers wait here for a new generation */
    pthread_cond_t done;            /* the caller waits here for joined workers */
    int started;                    /* workers alive (under mu) */
    uint32_t generation;            /* under mu */
    const lrc_job *job;             /* under mu; NULL between calls */
    _Atomic uint64_t state;
    _Atomic ptrdiff_t next;         /* next chunk to claim */
    _Atomic int finished;           /* joined workers done with the current job */
    _Atomic int busy;               /* a call owns the pool */
} lrc_pool;

static pthread_once_t lrc_pool_once = PTHREAD_ONCE_INIT;

/* GOMP_parallel(fn, data, num_threads, flags) of the OpenMP runtime in use (NULL: none). */
typedef void (*lrc_omp_parallel_fn)(void (*)(void *), void *, unsigned, unsigned);
static _Atomic(lrc_omp_parallel_fn) lrc_omp_parallel;

typedef struct {
    lrc_chunk_fn fn;
    void *ctx;
    ptrdiff_t chunks;
    _Atomic ptrdiff_t next;
    lrc_fp_control fp;
} lrc_omp_job;

/* Each thread of the OpenMP team, the caller included, claims chunks until none are left. */
static void lrc_omp_body(void *arg)
{
    lrc_omp_job *job = arg;
    const lrc_fp_control own = lrc_fp_control_get();
    lrc_fp_control_set(job->fp);
    ptrdiff_t c;
    while ((c = atomic_fetch_add(&job->next, 1)) < job->chunks) job->fn(job->ctx, c);
    lrc_fp_control_set(own);
}

static void lrc_pool_reset(void)
{
    pthread_mutex_init(&lrc_pool.mu, NULL);
    pthread_cond_init(&lrc_pool.wake, NULL);
    pthread_cond_init(&lrc_pool.done, NULL);
    lrc_pool.started = 0;
    lrc_pool.job = NULL;
    atomic_store(&lrc_pool.state, 0);
    atomic_store(&lrc_pool.finished, 0);
    atomic_store(&lrc_pool.busy, 0);
}

/* In a forked child only the forking thread exists: forget the parent's workers (and any
 * lock or job they held) and start afresh. */
static void lrc_pool_after_fork_in_child(void)
{
    lrc_pool_reset();
    atomic_store(&lrc_omp_parallel, NULL);
}

static void lrc_pool_init(void)
{
    lrc_pool_reset();
    pthread_atfork(NULL, NULL, lrc_pool_after_fork_in_child);
}

static void *lrc_pool_worker(void *arg)
{
    const int index = (int)(intptr_t)arg;
    pthread_mutex_lock(&lrc_pool.mu);
    uint32_t seen = lrc_pool.generation;
    for (;;) {
        if (lrc_pool.generation == seen) {
            /* poll the generation in `state` (set with it), then sleep */
            pthread_mutex_unlock(&lrc_pool.mu);
            const uint64_t deadline = lrc_now_ns() + LRC_SPIN_NS;
            for (unsigned i = 1; (uint32_t)(atomic_load(&lrc_pool.state) >> 32) == seen; i++) {
                lrc_cpu_relax();
                if (i % 64 == 0 && lrc_now_ns() > deadline) break;
            }
            pthread_mutex_lock(&lrc_pool.mu);
            while (lrc_pool.generation == seen)
                pthread_cond_wait(&lrc_pool.wake, &lrc_pool.mu);
        }
        seen = lrc_pool.generation;
        if (lrc_pool.job == NULL || index >= lrc_pool.job->helpers) continue;
        const lrc_job *job = lrc_pool.job;      /* dereferenced only after joining */
        pthread_mutex_unlock(&lrc_pool.mu);

        int joined = 0;
        uint64_t s = atomic_load(&lrc_pool.state);
        while ((uint32_t)(s >> 32) == seen && (s & LRC_OPEN)) {
            if (atomic_compare_exchange_weak(&lrc_pool.state, &s, s + 1)) {
                joined = 1;
                break;
            }
        }
        if (joined) {
            const lrc_fp_control own = lrc_fp_control_get();
            lrc_fp_control_set(job->fp);
            ptrdiff_t c;
            while ((c = atomic_fetch_add(&lrc_pool.next, 1)) < job->chunks) job->fn(job->ctx, c);
            lrc_fp_control_set(own);
            atomic_fetch_add(&lrc_pool.finished, 1);
        }
        pthread_mutex_lock(&lrc_pool.mu);
        if (joined) pthread_cond_signal(&lrc_pool.done);
    }
    return NULL;
}

/* Start workers until `wanted` run (under mu). A thread that cannot be created is simply not
 * there: the call goes on with the workers it has, down to none. */
static void lrc_pool_grow(int wanted)
{
    pthread_attr_t attr;
    sigset_t all, old;
    if (lrc_pool.started >= wanted || pthread_attr_init(&attr) != 0) return;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, (size_t)1 << 20);
    sigfillset(&all);       /* workers inherit a full mask: signals go to the interpreter's threads */
    pthread_sigmask(SIG_SETMASK, &all, &old);
    while (lrc_pool.started < wanted) {
        pthread_t thread;
        if (pthread_create(&thread, &attr, lrc_pool_worker,
                           (void *)(intptr_t)lrc_pool.started) != 0)
            break;
        lrc_pool.started++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
}

static inline int lrc_pool_workers(void)
{
    pthread_once(&lrc_pool_once, lrc_pool_init);
    pthread_mutex_lock(&lrc_pool.mu);
    const int n = lrc_pool.started;
    pthread_mutex_unlock(&lrc_pool.mu);
    return n;
}

/* Run parallel calls on the OpenMP runtime loaded in the process (share != 0), if it exports
 * GOMP_parallel, else (or share == 0) on lrcore's own workers; returns 1 if on the runtime. */
static int lrc_pool_share_openmp(int share)
{
    pthread_once(&lrc_pool_once, lrc_pool_init);
    lrc_omp_parallel_fn found = NULL;
    if (share) found = (lrc_omp_parallel_fn)dlsym(RTLD_DEFAULT, "GOMP_parallel");
    atomic_store(&lrc_omp_parallel, found);
    return found != NULL;
}

static inline int lrc_pool_openmp_shared(void)
{
    return atomic_load(&lrc_omp_parallel) != NULL;
}

/* Run fn(ctx, c) for every c in [0, chunks) on the calling thread and up to threads − 1
 * workers (or OpenMP team threads); returns when every chunk is done. */
static void lrc_pool_run(int threads, ptrdiff_t chunks, lrc_chunk_fn fn, void *ctx)
{
    int helpers = threads - 1;
    if (helpers > chunks - 1) helpers = (int)(chunks - 1);
    int expected = 0;
    if (helpers <= 0) {
        lrc_run_serial(chunks, fn, ctx);
        return;
    }
    pthread_once(&lrc_pool_once, lrc_pool_init);
    if (!atomic_compare_exchange_strong(&lrc_pool.busy, &expected, 1)) {
        lrc_run_serial(chunks, fn, ctx);        /* another thread's call has the pool */
        return;
    }
    const lrc_omp_parallel_fn omp_parallel = atomic_load(&lrc_omp_parallel);
    if (omp_parallel != NULL) {
        lrc_omp_job team = {fn, ctx, chunks, 0, lrc_fp_control_get()};
        omp_parallel(lrc_omp_body, &team, (unsigned)helpers + 1, 0);
        atomic_store(&lrc_pool.busy, 0);
        return;
    }
    const lrc_job job = {fn, ctx, chunks, helpers, lrc_fp_control_get()};
    pthread_mutex_lock(&lrc_pool.mu);
    lrc_pool_grow(helpers);
    lrc_pool.job = &job;
    lrc_pool.generation++;
    atomic_store(&lrc_pool.next, 0);
    atomic_store(&lrc_pool.finished, 0);
    atomic_store(&lrc_pool.state, ((uint64_t)lrc_pool.generation << 32) | LRC_OPEN);
    pthread_cond_broadcast(&lrc_pool.wake);
    pthread_mutex_unlock(&lrc_pool.mu);

    ptrdiff_t c;
    while ((c = atomic_fetch_add(&lrc_pool.next, 1)) < chunks) fn(ctx, c);

    /* close the job; only the workers that joined before this can still be working */
    const int joined = (int)(atomic_fetch_and(&lrc_pool.state, ~LRC_OPEN) & LRC_JOINED_MASK);
    const uint64_t deadline = lrc_now_ns() + LRC_CALLER_SPIN_NS;
    for (unsigned i = 1; atomic_load(&lrc_pool.finished) < joined; i++) {
        lrc_cpu_relax();
        if (i % 64 == 0 && lrc_now_ns() > deadline) break;
    }
    if (atomic_load(&lrc_pool.finished) < joined) {
        pthread_mutex_lock(&lrc_pool.mu);
        while (atomic_load(&lrc_pool.finished) < joined)
            pthread_cond_wait(&lrc_pool.done, &lrc_pool.mu);
        pthread_mutex_unlock(&lrc_pool.mu);
    }
    pthread_mutex_lock(&lrc_pool.mu);
    lrc_pool.job = NULL;
    pthread_mutex_unlock(&lrc_pool.mu);
    atomic_store(&lrc_pool.busy, 0);
}

#endif

#endif /* LRCORE_POOL_H */
