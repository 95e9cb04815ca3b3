/* base/base_thread.c: see base_thread.h.
 *
 * Why: Linux queues a new thread on its creator's CPU and moves it to an
 * idle one only after a while. `perf sched timehist` of pipec on this
 * project's 2-CPU machine caught the planner's two threads taking turns
 * on one CPU for 3-4 ms of a 20 ms compile while the other CPU idled
 * (docs/design-notes.md, "pipec's speed"). Only the start is placed: the
 * thread widens its own affinity again before it does any work.
 *
 * This file is built with base/ alone on its include path, so <sched.h>
 * is the C library's (schedules/sched.h shadows it elsewhere). */
#define _GNU_SOURCE
#include "base_thread.h"

#include <sched.h>
#include <stdlib.h>

#if defined(__linux__) && defined(__GLIBC__) && defined(CPU_COUNT)
typedef struct Start {
    void *(*fn)(void *);
    void *arg;
    cpu_set_t cpus; /* where the process may run */
} Start;

static void *placed(void *p)
{
    Start st = *(Start *)p;
    free(p);
    pthread_setaffinity_np(pthread_self(), sizeof st.cpus, &st.cpus); /* running elsewhere now */
    return st.fn(st.arg);
}

int base_thread_start(pthread_t *th, void *(*fn)(void *), void *arg)
{
    int here = sched_getcpu();
    Start *st = malloc(sizeof *st);
    if (st && here >= 0 && sched_getaffinity(0, sizeof st->cpus, &st->cpus) == 0 && CPU_COUNT(&st->cpus) > 1 &&
        CPU_ISSET(here, &st->cpus)) {
        st->fn = fn, st->arg = arg;
        cpu_set_t other = st->cpus;
        CPU_CLR(here, &other);
        pthread_attr_t a;
        if (pthread_attr_init(&a) == 0) {
            int rc = pthread_attr_setaffinity_np(&a, sizeof other, &other);
            if (rc == 0)
                rc = pthread_create(th, &a, placed, st);
            pthread_attr_destroy(&a);
            if (rc == 0)
                return 0;
        }
    }
    free(st);
    return pthread_create(th, NULL, fn, arg);
}
#else
int base_thread_start(pthread_t *th, void *(*fn)(void *), void *arg)
{
    return pthread_create(th, NULL, fn, arg);
}
#endif
