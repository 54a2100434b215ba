/* pool.c — the worker pool: a bounded FIFO of calls, N threads that run each call's model, and the
 * hand-back of finished calls to the event loop thread (a libevent user event activated from the
 * worker; the loop then runs call->done). A full queue is refused at submit time, so load beyond
 * capacity becomes UNAVAILABLE / HTTP 429 instead of unbounded memory. Also owns cl_serve_call.
 * Thread-safety: submit/inflight/free from the loop thread; workers touch only queued calls. */
#include "serve_int.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

struct cl_serve_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    cl_serve_call *head, *tail; /* waiting for a worker */
    unsigned queued, limit;
    cl_serve_call *done_head, *done_tail; /* finished, waiting for the loop */
    atomic_uint inflight;
    bool stopping;
    pthread_t *threads;
    unsigned nthreads;
    struct event *done_ev;
};

cl_serve_call *cl_serve_call_new(cl_serve_server *srv, cl_serve_api api, cl_serve_rpc rpc)
{
    cl_serve_call *c = calloc(1, sizeof *c);
    if (c) {
        c->srv = srv;
        c->api = api;
        c->rpc = rpc;
        c->start_ns = cl_now_ns();
    }
    return c;
}

void cl_serve_call_free(cl_serve_call *c)
{
    if (!c)
        return;
    cl_serve_model_release(c->model);
    if (c->inputs) {
        for (size_t i = 0; i < c->n_inputs; i++)
            cl_serve_tensor_clear(&c->inputs[i]);
        free(c->inputs);
    }
    cl_serve_tensors_free(c->outputs, c->n_outputs);
    for (size_t i = 0; i < c->n_output_filter; i++)
        free(c->output_filter[i]);
    free(c->output_filter);
    free(c);
}

static void *worker_main(void *arg)
{
    cl_serve_pool *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (!p->head && !p->stopping)
            pthread_cond_wait(&p->cv, &p->mu);
        cl_serve_call *c = p->head;
        if (!c) {
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        p->head = c->next;
        if (!p->head)
            p->tail = NULL;
        p->queued--;
        pthread_mutex_unlock(&p->mu);

        c->next = NULL;
        cl_err err = {0};
        if (cl_serve_model_run(c->model, c->inputs, c->n_inputs, &c->outputs, &c->n_outputs, &err) != 0) {
            cl_serve_st_from_err(&c->st, &err);
        } else {
            c->st.code = CL_SC_OK;
        }

        pthread_mutex_lock(&p->mu);
        if (p->done_tail)
            p->done_tail->next = c;
        else
            p->done_head = c;
        p->done_tail = c;
        pthread_mutex_unlock(&p->mu);
        event_active(p->done_ev, EV_READ, 0);
    }
}

static void on_done(evutil_socket_t fd, short what, void *arg)
{
    cl_serve_pool *p = arg;
    pthread_mutex_lock(&p->mu);
    cl_serve_call *c = p->done_head;
    p->done_head = p->done_tail = NULL;
    pthread_mutex_unlock(&p->mu);
    while (c) {
        cl_serve_call *next = c->next;
        c->next = NULL;
        atomic_fetch_sub(&p->inflight, 1);
        c->done(c);
        c = next;
    }
}

cl_serve_pool *cl_serve_pool_new(struct event_base *base, unsigned workers, unsigned queue_limit, cl_err *err)
{
    cl_serve_pool *p = calloc(1, sizeof *p);
    if (!p) {
        cl_err_set(err, CL_E_NOMEM, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->limit = queue_limit;
    atomic_init(&p->inflight, 0);
    p->done_ev = event_new(base, -1, 0, on_done, p);
    p->threads = calloc(workers, sizeof *p->threads);
    if (!p->done_ev || !p->threads) {
        cl_err_set(err, CL_E_NOMEM, "out of memory");
        cl_serve_pool_free(p);
        return NULL;
    }
    for (unsigned i = 0; i < workers; i++) {
        int rc = pthread_create(&p->threads[i], NULL, worker_main, p);
        if (rc != 0) {
            cl_err_errno(err, CL_E_NOMEM, rc, "cannot start worker thread %u of %u", i + 1, workers);
            cl_serve_pool_free(p);
            return NULL;
        }
        p->nthreads++;
    }
    return p;
}

int cl_serve_pool_submit(cl_serve_pool *p, cl_serve_call *c)
{
    pthread_mutex_lock(&p->mu);
    if (p->queued >= p->limit || p->stopping) {
        pthread_mutex_unlock(&p->mu);
        return -1;
    }
    c->next = NULL;
    if (p->tail)
        p->tail->next = c;
    else
        p->head = c;
    p->tail = c;
    p->queued++;
    atomic_fetch_add(&p->inflight, 1);
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return 0;
}

unsigned cl_serve_pool_inflight(cl_serve_pool *p) { return atomic_load(&p->inflight); }

void cl_serve_pool_free(cl_serve_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    /* Calls that finished after the loop stopped: their clients are gone; just free them. */
    for (cl_serve_call *c = p->done_head; c;) {
        cl_serve_call *next = c->next;
        c->owner = NULL;
        c->done(c);
        c = next;
    }
    if (p->done_ev)
        event_free(p->done_ev);
    free(p->threads);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
