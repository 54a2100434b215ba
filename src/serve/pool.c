/* pool.c — the worker pool: a bounded FIFO of calls, N threads that run each call's model, and the
 * hand-back of finished calls to the event loop thread they came from (a completion queue per loop:
 * a libevent user event activated from the worker; the loop then runs call->done). Calls on models
 * that cost less than a hand-off may instead run inline, on the loop thread that made them
 * (cl_serve_pool_run_inline). A full queue is refused at submit time, so load beyond
 * capacity becomes UNAVAILABLE / HTTP 429 instead of unbounded memory. Also owns cl_serve_call.
 *
 * Dynamic batching (optional): a worker that takes a call for a batchable model (every signature
 * input and output has a dynamic first dimension) opens a batch, takes compatible calls already
 * queued (same model version, same dtypes and trailing dims), and waits up to batch_timeout for
 * more: while it waits, submit() adds compatible calls straight into the open batch. The batch runs
 * as one model call on inputs concatenated along dimension 0, and the outputs are split back by
 * each call's row count. A batch never exceeds max_batch_size rows; a call alone above it runs
 * alone. Calls that cannot be batched run on their own exactly as without batching. Calls carrying
 * encoded images are matched by image count and decoded by the worker once the batch is gathered
 * (outside the lock); one whose images fail is answered with its error and leaves the batch.
 *
 * Memory (docs/serve.md "Memory"): a call is admitted with its share of the budget: its inputs (as
 * received and as decoded), its outputs and the working memory of one model run as the backend
 * estimates it. A call above the per-request limit whose model takes a dynamic batch runs in pieces
 * of as many rows as fit (run_pieces); one that cannot is refused with RESOURCE_EXHAUSTED, as is a
 * call that would take the calls in flight above the total. The share is given back when the call's
 * run ends (its inputs are freed then too; only its outputs wait for the loop to encode them).
 *
 * Thread-safety: submit/inflight/queued/stats/free from the loop thread; one mutex guards the
 * queue and the open batches; workers touch a call only after taking it from the queue or batch; the
 * memory counters are atomic. */
#include "serve_int.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

/* A batch being gathered by one worker (lives on that worker's stack). */
typedef struct batch {
    cl_serve_model *model;
    const cl_serve_call *first; /* defines dtypes and trailing dims */
    cl_serve_call **calls;      /* [max_batch] */
    unsigned n;
    int64_t rows;
    size_t in_bytes;    /* the members' inputs as the backend sees them */
    struct batch *next; /* in the pool's list of open batches */
} batch;

/* Finished calls on their way back to one loop thread. */
struct cl_serve_doneq {
    cl_serve_pool *p;
    pthread_mutex_t mu;
    cl_serve_call *head, *tail;
    struct event *ev;
};

struct cl_serve_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;       /* work arrived / stopping */
    pthread_cond_t batch_cv; /* an open batch filled up / stopping */
    cl_serve_call *head, *tail; /* waiting for a worker */
    unsigned queued, limit;
    cl_serve_doneq *main_q; /* the loop the pool was made with: calls without a doneq return there */
    atomic_uint inflight;
    bool stopping;
    pthread_t *threads;
    unsigned nthreads;
    /* batching */
    cl_serve_batching bat; /* max_batch_size == 0: off */
    batch *open;
    atomic_ullong batch_hist[CL_SERVE_BATCH_BUCKETS + 1];
    atomic_ullong batch_rows_sum;
    /* memory */
    size_t mem_req, mem_total; /* limits; SIZE_MAX: none */
    atomic_size_t mem_held, mem_peak;
    atomic_ullong mem_refused[2];
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
    free(c->infer);
    free(c);
}

/* ---------------------------------------------------------------- batching */

/* Rows of a call whose inputs are in signature order, or -1 when it cannot join a batch. */
static int64_t call_rows(const cl_serve_call *c)
{
    const cl_serve_signature *sig = cl_serve_model_signature(c->model);
    if (!sig->n_inputs || c->n_inputs != sig->n_inputs)
        return -1;
    int64_t rows = -1;
    for (size_t k = 0; k < c->n_inputs; k++) {
        const cl_serve_tensor *t = &c->inputs[k];
        if (t->ndim < 1 || t->dims[0] < 1 || (rows >= 0 && t->dims[0] != rows))
            return -1;
        rows = t->dims[0];
    }
    return rows;
}

static bool model_batchable(const cl_serve_model *m)
{
    const cl_serve_signature *sig = cl_serve_model_signature(m);
    if (!sig->n_inputs || !sig->n_outputs)
        return false;
    for (size_t i = 0; i < sig->n_inputs + sig->n_outputs; i++) {
        const cl_serve_tensor_spec *ts = i < sig->n_inputs ? &sig->inputs[i] : &sig->outputs[i - sig->n_inputs];
        if (ts->ndim < 1 || ts->dims[0] != -1)
            return false;
    }
    return true;
}

/* Puts the call's inputs in signature order; its rows, or -1 if it is not batchable (then it runs
 * alone, through cl_serve_model_run, which reports any problem with its inputs). */
static int64_t prepare(const cl_serve_pool *p, cl_serve_call *c)
{
    if (!p->bat.max_batch_size || c->run_rows || !model_batchable(c->model))
        return -1;
    cl_err err = {0};
    if (cl_serve_model_order_inputs(c->model, c->inputs, c->n_inputs, &err) != 0)
        return -1;
    return call_rows(c);
}

/* Can call c (prepared, `rows` rows) join batch b? */
static bool fits(const cl_serve_pool *p, const batch *b, const cl_serve_call *c, int64_t rows)
{
    if (rows < 1 || c->model != b->model || b->rows + rows > (int64_t)p->bat.max_batch_size)
        return false;
    /* one model run within the per-request limit: the batch's inputs, copied, and its working memory */
    size_t in = b->in_bytes + c->run_in;
    if (p->mem_req != SIZE_MAX && in + cl_serve_model_memory(b->model, in) > p->mem_req)
        return false;
    for (size_t k = 0; k < c->n_inputs; k++) {
        const cl_serve_tensor *x = &c->inputs[k], *y = &b->first->inputs[k];
        if (x->dtype != y->dtype || x->ndim != y->ndim)
            return false;
        for (int d = 1; d < x->ndim; d++)
            if (x->dims[d] != y->dims[d])
                return false;
    }
    return true;
}

static void batch_add(batch *b, cl_serve_call *c, int64_t rows)
{
    b->calls[b->n++] = c;
    b->rows += rows;
    b->in_bytes += c->run_in;
}

/* Runs a batch of n >= 2 calls as one model call and splits the outputs. */
static void run_batch(batch *b)
{
    cl_err err = {0};
    const cl_serve_call *f = b->calls[0];
    size_t nin = f->n_inputs;
    cl_serve_tensor *in = calloc(nin, sizeof *in), *out = NULL;
    size_t nout = 0;
    int rc = in ? 0 : cl_err_nomem(&err);
    for (size_t k = 0; rc == 0 && k < nin; k++) {
        int64_t dims[CL_SERVE_MAX_DIMS];
        memcpy(dims, f->inputs[k].dims, sizeof dims);
        dims[0] = b->rows;
        rc = cl_serve_tensor_init(&in[k], f->inputs[k].name, f->inputs[k].dtype, f->inputs[k].ndim, dims, 0, &err);
        size_t off = 0;
        for (unsigned i = 0; rc == 0 && i < b->n; i++) {
            memcpy((uint8_t *)in[k].data + off, b->calls[i]->inputs[k].data, b->calls[i]->inputs[k].nbytes);
            off += b->calls[i]->inputs[k].nbytes;
        }
    }
    if (rc == 0)
        rc = cl_serve_model_run_ordered(b->model, in, &out, &nout, &err);
    for (size_t o = 0; rc == 0 && o < nout; o++)
        if (out[o].ndim < 1 || out[o].dims[0] != b->rows)
            rc = cl_err_set(&err, CL_E_INTERNAL, "model output '%s' does not have the batch dimension "
                            "(batched %lld rows); serve this model without --enable_batching", out[o].name,
                            (long long)b->rows);
    /* split: call i gets rows [start, start + rows_i) of every output */
    int64_t start = 0;
    for (unsigned i = 0; i < b->n; i++) {
        cl_serve_call *c = b->calls[i];
        int64_t rows = c->inputs[0].dims[0];
        int crc = rc;
        cl_err cerr = err;
        if (crc == 0 && !(c->outputs = calloc(nout ? nout : 1, sizeof *c->outputs)))
            crc = cl_err_nomem(&cerr);
        for (size_t o = 0; crc == 0 && o < nout; o++) {
            int64_t dims[CL_SERVE_MAX_DIMS];
            memcpy(dims, out[o].dims, sizeof dims);
            dims[0] = rows;
            crc = cl_serve_tensor_init(&c->outputs[o], out[o].name, out[o].dtype, out[o].ndim, dims, 0, &cerr);
            if (crc == 0) {
                size_t row_bytes = out[o].nbytes / (size_t)b->rows;
                memcpy(c->outputs[o].data, (uint8_t *)out[o].data + (size_t)start * row_bytes, c->outputs[o].nbytes);
                c->n_outputs = o + 1;
            }
        }
        if (crc != 0) {
            cl_serve_tensors_free(c->outputs, c->n_outputs);
            c->outputs = NULL;
            c->n_outputs = 0;
            cl_serve_st_from_err(&c->st, &cerr);
        } else {
            c->n_outputs = nout;
            c->st.code = CL_SC_OK;
        }
        start += rows;
    }
    if (in)
        cl_serve_tensors_free(in, nin);
    cl_serve_tensors_free(out, nout);
}

/* Replaces a call's encoded images by the decoded float batch (the worker's job, outside the pool
 * lock); on failure the call gets the error and -1. */
static int decode_call(cl_serve_call *c)
{
    cl_err err = {0};
    cl_serve_tensor *dec = calloc(c->n_inputs ? c->n_inputs : 1, sizeof *dec);
    int n = dec ? cl_serve_model_decode_images(c->model, c->inputs, c->n_inputs, dec, &err)
                : cl_err_nomem(&err);
    if (n < 0) {
        free(dec);
        cl_serve_st_from_err(&c->st, &err);
        return -1;
    }
    for (size_t i = 0; n > 0 && i < c->n_inputs; i++) {
        if (dec[i].data) {
            cl_serve_tensor_clear(&c->inputs[i]);
            c->inputs[i] = dec[i];
        }
    }
    free(dec);
    return 0;
}

/* Rows the call's inputs share in their first dimension (an input of encoded images counts them);
 * -1 when they do not all have one, or differ. Inputs in any order. */
static int64_t shared_rows(const cl_serve_call *c)
{
    int64_t rows = -1;
    for (size_t k = 0; k < c->n_inputs; k++) {
        const cl_serve_tensor *t = &c->inputs[k];
        if (t->ndim < 1 || t->dims[0] < 1 || (rows >= 0 && t->dims[0] != rows))
            return -1;
        rows = t->dims[0];
    }
    return rows;
}

/* A call above the per-request memory limit, run c->run_rows rows at a time: images decoded first,
 * each piece a view of the inputs' rows, the outputs put together row by row. */
static void run_pieces(cl_serve_call *c)
{
    cl_err err = {0};
    if (decode_call(c) != 0)
        return; /* its error is set */
    int64_t rows = shared_rows(c), k = c->run_rows;
    cl_serve_tensor *view = NULL, *out = NULL, *all = NULL;
    size_t nin = c->n_inputs, nout = 0, nall = 0;
    int rc = cl_serve_model_order_inputs(c->model, c->inputs, nin, &err);
    if (rc == 0 && (rows < 1 || !(view = calloc(nin ? nin : 1, sizeof *view))))
        rc = cl_err_set(&err, rows < 1 ? CL_E_INTERNAL : CL_E_NOMEM, rows < 1 ? "the inputs lost their batch "
                        "dimension" : "out of memory");
    for (int64_t start = 0; rc == 0 && start < rows; start += k) {
        int64_t n = rows - start < k ? rows - start : k;
        for (size_t i = 0; i < nin; i++) {
            size_t row = c->inputs[i].nbytes / (size_t)rows;
            view[i] = c->inputs[i]; /* shallow: rows [start, start + n) */
            view[i].dims[0] = n;
            view[i].data = (uint8_t *)c->inputs[i].data + (size_t)start * row;
            view[i].nbytes = (size_t)n * row;
        }
        if ((rc = cl_serve_model_run_ordered(c->model, view, &out, &nout, &err)) != 0)
            break;
        if (start && nout != nall)
            rc = cl_err_set(&err, CL_E_INTERNAL, "the model gave %zu outputs for one piece of the request and %zu "
                            "for another", nall, nout);
        if (!all && !(all = calloc(nout ? nout : 1, sizeof *all)))
            rc = cl_err_nomem(&err);
        for (size_t o = 0; rc == 0 && o < nout; o++) {
            if (out[o].ndim < 1 || out[o].dims[0] != n || (start && (o >= nall || out[o].nbytes / (size_t)n !=
                                                                      all[o].nbytes / (size_t)rows))) {
                rc = cl_err_set(&err, CL_E_INTERNAL, "model output '%s' does not keep the batch dimension, so "
                                "the request (%lld rows) cannot run in pieces of %lld within the per-request "
                                "memory limit; send fewer rows", out[o].name, (long long)rows, (long long)k);
                break;
            }
            if (!start) {
                int64_t dims[CL_SERVE_MAX_DIMS];
                memcpy(dims, out[o].dims, sizeof dims);
                dims[0] = rows;
                if ((rc = cl_serve_tensor_init(&all[o], out[o].name, out[o].dtype, out[o].ndim, dims, 0, &err)) != 0)
                    break;
                nall = o + 1;
            }
            memcpy((uint8_t *)all[o].data + (size_t)start * (out[o].nbytes / (size_t)n), out[o].data, out[o].nbytes);
        }
        cl_serve_tensors_free(out, nout);
        out = NULL;
        if (rc == 0 && !start && nall != nout)
            rc = cl_err_nomem(&err);
    }
    free(view);
    if (rc != 0) {
        cl_serve_tensors_free(all, nall);
        cl_serve_st_from_err(&c->st, &err);
        return;
    }
    c->outputs = all;
    c->n_outputs = nall;
    c->st.code = CL_SC_OK;
}

static void run_one(cl_serve_call *c)
{
    cl_err err = {0};
    int64_t rows = c->run_rows ? shared_rows(c) : 0;
    if (c->run_rows && rows > c->run_rows)
        run_pieces(c);
    else if (cl_serve_model_run(c->model, c->inputs, c->n_inputs, &c->outputs, &c->n_outputs, &err) != 0)
        cl_serve_st_from_err(&c->st, &err);
    else
        c->st.code = CL_SC_OK;
}

/* ---------------------------------------------------------------- memory */

static size_t add_sat(size_t a, size_t b) { return a > SIZE_MAX - b ? SIZE_MAX : a + b; }

static double mib(size_t b) { return (double)b / (1024.0 * 1024.0); }

/* Output bytes the signature promises for `rows` rows; dimensions it leaves open count nothing (the
 * backend's working memory includes its outputs while it runs). */
static size_t output_bytes(const cl_serve_signature *sig, int64_t rows)
{
    size_t total = 0;
    for (size_t o = 0; o < sig->n_outputs; o++) {
        const cl_serve_tensor_spec *ts = &sig->outputs[o];
        if (ts->ndim < 0)
            continue;
        size_t n = cl_serve_dtype_size(ts->dtype);
        for (int d = 0; n && d < ts->ndim; d++) {
            int64_t v = ts->dims[d] >= 0 ? ts->dims[d] : d == 0 && rows > 0 ? rows : 0;
            n = v && n <= SIZE_MAX / (size_t)v ? n * (size_t)v : 0;
        }
        total = add_sat(total, n);
    }
    return total;
}

/* Admits the call under the memory limits: decides how many rows a model run takes (c->run_rows) and
 * takes the call's share of the budget (c->mem_held). -1 with c->st set when it is refused. */
static int admit(cl_serve_pool *p, cl_serve_call *c)
{
    c->run_rows = 0;
    c->mem_held = 0;
    size_t in = 0, strings = 0, decoded = 0;
    for (size_t i = 0; i < c->n_inputs; i++) {
        in = add_sat(in, c->inputs[i].nbytes);
        if (c->inputs[i].dtype == CL_SERVE_DT_STRING)
            strings = add_sat(strings, c->inputs[i].nbytes);
    }
    /* a budget already full refuses at once, before the images' headers are read */
    if (in > p->mem_total - (atomic_load(&p->mem_held) < p->mem_total ? atomic_load(&p->mem_held) : p->mem_total))
        goto over_budget;
    size_t decode = strings ? cl_serve_model_decode_bytes(c->model, c->inputs, c->n_inputs, &decoded) : 0;
    c->run_in = add_sat(in - strings, decoded);
    int64_t rows = shared_rows(c);
    size_t hold = add_sat(add_sat(in, decode), output_bytes(cl_serve_model_signature(c->model), rows));
    size_t copy = p->bat.max_batch_size ? c->run_in : 0; /* a batch copies its members' inputs */
    size_t work = cl_serve_model_memory(c->model, c->run_in);
    size_t share = add_sat(add_sat(hold, copy), work);
    if (share > p->mem_req) {
        /* in pieces: the largest number of rows whose run fits beside what the call holds anyway */
        bool splittable = rows > 1 && model_batchable(c->model);
        int64_t lo = 0, hi = splittable ? rows - 1 : 0;
        size_t per_row = rows > 0 ? c->run_in / (size_t)rows : 0;
        while (lo < hi) {
            int64_t mid = lo + (hi - lo + 1) / 2;
            if (add_sat(hold, cl_serve_model_memory(c->model, per_row * (size_t)mid)) <= p->mem_req)
                lo = mid;
            else
                hi = mid - 1;
        }
        if (lo < 1) {
            atomic_fetch_add(&p->mem_refused[0], 1);
            size_t one = splittable ? cl_serve_model_memory(c->model, per_row) : work;
            cl_serve_st_set(&c->st, CL_SC_RESOURCE_EXHAUSTED, "the request needs %.1f MiB (inputs %.1f MiB%s, "
                            "outputs %.1f MiB, model working memory %.1f MiB%s), more than the %.1f MiB one request "
                            "may use (--max_request_memory_mb): send fewer or smaller inputs", mib(add_sat(hold, one)),
                            mib(in), decode ? " and decoded images" : "", mib(hold - in - decode), mib(one),
                            splittable ? " for one row" : "", mib(p->mem_req));
            return -1;
        }
        c->run_rows = lo;
        work = cl_serve_model_memory(c->model, per_row * (size_t)lo);
        share = add_sat(hold, work);
    }
    size_t before = atomic_fetch_add(&p->mem_held, share);
    if (share > p->mem_total - (before < p->mem_total ? before : p->mem_total)) {
        atomic_fetch_sub(&p->mem_held, share);
        in = share;
    over_budget:
        atomic_fetch_add(&p->mem_refused[1], 1);
        cl_serve_st_set(&c->st, CL_SC_RESOURCE_EXHAUSTED, "the server's memory for requests is in use (%.1f MiB "
                        "held by requests in flight, this one needs %.1f MiB or more, the budget is %.1f MiB: "
                        "--memory_budget_mb); retry later", mib(atomic_load(&p->mem_held)), mib(in),
                        mib(p->mem_total));
        return -1;
    }
    size_t now = before + share, peak = atomic_load(&p->mem_peak);
    while (now > peak && !atomic_compare_exchange_weak(&p->mem_peak, &peak, now)) {
    }
    c->mem_held = share;
    return 0;
}

static void record_batch(cl_serve_pool *p, int64_t rows)
{
    unsigned k = 0;
    while (k < CL_SERVE_BATCH_BUCKETS && rows > (int64_t)1 << k)
        k++;
    atomic_fetch_add(&p->batch_hist[k], 1);
    atomic_fetch_add(&p->batch_rows_sum, (unsigned long long)rows);
}

/* The end of a call's run: its inputs are no longer needed, and its share of the memory budget goes
 * back (the outputs, much smaller for the models this is about, are encoded by the loop soon). */
static void run_done(cl_serve_pool *p, cl_serve_call *c)
{
    for (size_t i = 0; i < c->n_inputs; i++)
        cl_serve_tensor_clear(&c->inputs[i]);
    if (c->mem_held) {
        atomic_fetch_sub(&p->mem_held, c->mem_held);
        c->mem_held = 0;
    }
}

/* Hands finished calls to the loop threads they came from. */
static void deliver(cl_serve_pool *p, cl_serve_call **calls, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        cl_serve_call *c = calls[i];
        run_done(p, c);
        cl_serve_doneq *q = c->doneq ? c->doneq : p->main_q;
        c->next = NULL;
        pthread_mutex_lock(&q->mu);
        bool was_empty = !q->head;
        if (q->tail)
            q->tail->next = c;
        else
            q->head = c;
        q->tail = c;
        pthread_mutex_unlock(&q->mu);
        /* a non-empty queue already has its event pending (on_done empties it under the lock), so a
         * batch wakes its loop once, not once per call */
        if (was_empty)
            event_active(q->ev, EV_READ, 0);
    }
}

static void *worker_main(void *arg)
{
    cl_serve_pool *p = arg;
    cl_serve_call **calls = calloc(p->bat.max_batch_size ? p->bat.max_batch_size : 1, sizeof *calls);
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (!p->head && !p->stopping)
            pthread_cond_wait(&p->cv, &p->mu);
        cl_serve_call *c = p->head;
        if (!c) {
            pthread_mutex_unlock(&p->mu);
            break;
        }
        p->head = c->next;
        if (!p->head)
            p->tail = NULL;
        p->queued--;
        c->next = NULL;

        int64_t rows = calls ? prepare(p, c) : -1;
        batch b = {.model = c->model, .first = c, .calls = calls};
        if (rows >= 1 && rows < (int64_t)p->bat.max_batch_size) {
            batch_add(&b, c, rows);
            /* compatible calls already waiting join now */
            for (cl_serve_call **pp = &p->head, *prev = NULL; *pp && b.rows < (int64_t)p->bat.max_batch_size;) {
                cl_serve_call *q = *pp;
                int64_t qr = prepare(p, q);
                if (fits(p, &b, q, qr)) {
                    *pp = q->next;
                    if (p->tail == q)
                        p->tail = prev;
                    q->next = NULL;
                    p->queued--;
                    batch_add(&b, q, qr);
                } else {
                    prev = q;
                    pp = &q->next;
                }
            }
            /* then wait for more, up to the batch timeout */
            if (b.rows < (int64_t)p->bat.max_batch_size && p->bat.batch_timeout_us && !p->stopping) {
                struct timespec dl;
                clock_gettime(CLOCK_REALTIME, &dl);
                uint64_t ns = (uint64_t)dl.tv_nsec + (uint64_t)p->bat.batch_timeout_us * 1000u;
                dl.tv_sec += (time_t)(ns / 1000000000u);
                dl.tv_nsec = (long)(ns % 1000000000u);
                b.next = p->open;
                p->open = &b;
                while (b.rows < (int64_t)p->bat.max_batch_size && !p->stopping &&
                       pthread_cond_timedwait(&p->batch_cv, &p->mu, &dl) == 0) {
                }
                batch **bp = &p->open;
                while (*bp != &b)
                    bp = &(*bp)->next;
                *bp = b.next;
            }
        }
        pthread_mutex_unlock(&p->mu);

        bool gathered = b.n >= 1; /* c went through the batching path */
        if (b.n >= 2) {
            /* requests that sent encoded images are decoded now; one whose images fail gets its error
             * alone and leaves the batch */
            unsigned kept = 0;
            for (unsigned i = 0; i < b.n; i++) {
                cl_serve_call *q = b.calls[i];
                int64_t qr = call_rows(q);
                if (decode_call(q) != 0) {
                    b.rows -= qr > 0 ? qr : 0;
                    deliver(p, &q, 1);
                } else {
                    b.calls[kept++] = q;
                }
            }
            b.n = kept;
            b.first = kept ? b.calls[0] : NULL;
        }
        if (b.n >= 2) {
            run_batch(&b);
            record_batch(p, b.rows);
            deliver(p, b.calls, b.n);
        } else if (!gathered || b.n == 1) {
            if (gathered)
                c = b.calls[0];
            int64_t r = call_rows(c);
            run_one(c);
            if (p->bat.max_batch_size)
                record_batch(p, r > 0 ? r : 1);
            deliver(p, &c, 1);
        } /* else every call of the batch failed to decode and has been answered */
    }
    free(calls);
    return NULL;
}

static void on_done(evutil_socket_t fd, short what, void *arg)
{
    cl_serve_doneq *q = arg;
    pthread_mutex_lock(&q->mu);
    cl_serve_call *c = q->head;
    q->head = q->tail = NULL;
    pthread_mutex_unlock(&q->mu);
    while (c) {
        cl_serve_call *next = c->next;
        c->next = NULL;
        atomic_fetch_sub(&q->p->inflight, 1);
        c->done(c);
        c = next;
    }
}

cl_serve_doneq *cl_serve_doneq_new(cl_serve_pool *p, struct event_base *base, cl_err *err)
{
    cl_serve_doneq *q = calloc(1, sizeof *q);
    if (!q || !(q->ev = event_new(base, -1, 0, on_done, q))) {
        free(q);
        cl_err_nomem(err);
        return NULL;
    }
    q->p = p;
    pthread_mutex_init(&q->mu, NULL);
    return q;
}

void cl_serve_doneq_free(cl_serve_doneq *q)
{
    if (!q)
        return;
    /* calls that finished after their loop stopped: their clients are gone; just free them */
    for (cl_serve_call *c = q->head; c;) {
        cl_serve_call *next = c->next;
        c->owner = NULL;
        c->done(c);
        c = next;
    }
    event_free(q->ev);
    pthread_mutex_destroy(&q->mu);
    free(q);
}

cl_serve_pool *cl_serve_pool_new(struct event_base *base, unsigned workers, unsigned queue_limit,
                                 const cl_serve_batching *bat, cl_err *err)
{
    cl_serve_pool *p = calloc(1, sizeof *p);
    if (!p) {
        cl_err_nomem(err);
        return NULL;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    pthread_cond_init(&p->batch_cv, NULL);
    p->limit = queue_limit;
    p->mem_req = p->mem_total = SIZE_MAX;
    if (bat && bat->max_batch_size >= 2)
        p->bat = *bat;
    atomic_init(&p->inflight, 0);
    p->main_q = cl_serve_doneq_new(p, base, err);
    p->threads = calloc(workers, sizeof *p->threads);
    if (!p->main_q || !p->threads) {
        cl_err_nomem(err);
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

void cl_serve_pool_set_memory(cl_serve_pool *p, size_t request_bytes, size_t total_bytes)
{
    p->mem_req = request_bytes;
    p->mem_total = total_bytes;
}

size_t cl_serve_pool_memory_held(cl_serve_pool *p) { return atomic_load(&p->mem_held); }

size_t cl_serve_pool_memory_peak(cl_serve_pool *p, bool reset)
{
    return reset ? atomic_exchange(&p->mem_peak, atomic_load(&p->mem_held)) : atomic_load(&p->mem_peak);
}

void cl_serve_pool_memory_refused(cl_serve_pool *p, uint64_t out[2])
{
    out[0] = atomic_load(&p->mem_refused[0]);
    out[1] = atomic_load(&p->mem_refused[1]);
}

/* A call the queue cannot take: its share goes back, and it says why. */
static int refuse_full(cl_serve_pool *p, cl_serve_call *c)
{
    if (c->mem_held) {
        atomic_fetch_sub(&p->mem_held, c->mem_held);
        c->mem_held = 0;
    }
    cl_serve_st_set(&c->st, CL_SC_UNAVAILABLE, "the server is at capacity (request queue full); retry later");
    return -1;
}

int cl_serve_pool_submit(cl_serve_pool *p, cl_serve_call *c)
{
    if (admit(p, c) != 0)
        return -1;
    pthread_mutex_lock(&p->mu);
    if (p->stopping) {
        pthread_mutex_unlock(&p->mu);
        return refuse_full(p, c);
    }
    c->next = NULL;
    /* a worker gathering a batch for this model takes the call directly */
    if (p->open) {
        int64_t rows = prepare(p, c);
        for (batch *b = p->open; b; b = b->next) {
            if (fits(p, b, c, rows)) {
                batch_add(b, c, rows);
                atomic_fetch_add(&p->inflight, 1);
                if (b->rows >= (int64_t)p->bat.max_batch_size)
                    pthread_cond_broadcast(&p->batch_cv);
                pthread_mutex_unlock(&p->mu);
                return 0;
            }
        }
    }
    if (p->queued >= p->limit) {
        pthread_mutex_unlock(&p->mu);
        return refuse_full(p, c);
    }
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

bool cl_serve_pool_run_inline(cl_serve_pool *p, cl_serve_call *c, uint64_t max_ns)
{
    if (!max_ns || p->bat.max_batch_size || cl_serve_model_typical_ns(c->model) > max_ns)
        return false;
    for (size_t i = 0; i < c->n_inputs; i++)
        if (c->inputs[i].dtype == CL_SERVE_DT_STRING)
            return false; /* image decoding is not cheap */
    /* Calls waiting in the queue do not hold it back: it takes no worker from them. (Waiting for an
     * empty queue would let a burst that arrived before the model was measured keep every later
     * call on the workers for as long as the load lasts.) */
    if (admit(p, c) == 0) {
        run_one(c);
        run_done(p, c);
    }
    return true;
}

unsigned cl_serve_pool_inflight(cl_serve_pool *p) { return atomic_load(&p->inflight); }

unsigned cl_serve_pool_queued(cl_serve_pool *p)
{
    pthread_mutex_lock(&p->mu);
    unsigned q = p->queued;
    pthread_mutex_unlock(&p->mu);
    return q;
}

bool cl_serve_pool_batch_stats(cl_serve_pool *p, uint64_t hist[CL_SERVE_BATCH_BUCKETS + 1], uint64_t *rows_sum)
{
    for (unsigned k = 0; k <= CL_SERVE_BATCH_BUCKETS; k++)
        hist[k] = atomic_load(&p->batch_hist[k]);
    *rows_sum = atomic_load(&p->batch_rows_sum);
    return p->bat.max_batch_size != 0;
}

void cl_serve_pool_free(cl_serve_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_cond_broadcast(&p->cv);
    pthread_cond_broadcast(&p->batch_cv);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    cl_serve_doneq_free(p->main_q);
    free(p->threads);
    pthread_cond_destroy(&p->cv);
    pthread_cond_destroy(&p->batch_cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
