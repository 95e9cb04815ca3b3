/* base/base_thread.h: starting a second thread where it can run at once. */
#ifndef BASE_THREAD_H
#define BASE_THREAD_H

#include <pthread.h>

/* pthread_create(th, NULL, fn, arg), started on another CPU than the
 * caller's where the process may use more than one (Linux, glibc); once
 * running, the thread may run anywhere the process may. Returns 0 or an
 * error number, as pthread_create. */
int base_thread_start(pthread_t *th, void *(*fn)(void *), void *arg);

#endif
