/* progress.c — a one-line progress bar for long CLI operations, drawn on stderr only when stderr is
 * a terminal (so logs and pipes stay clean). Redrawn at most 10 times a second. */
#include <stdio.h>
#include <unistd.h>

#include "cli.h"

void cl_progress_start(cl_progress *p, const char *label, uint64_t total)
{
    p->label = label;
    p->total = total;
    p->start_ns = p->last_draw_ns = cl_now_ns();
    p->active = total >= (4u << 20) && isatty(STDERR_FILENO);
}

static void draw(cl_progress *p, uint64_t done)
{
    double frac = p->total ? (double)done / (double)p->total : 1.0;
    int width = 30, filled = (int)(frac * width);
    double secs = (double)(cl_now_ns() - p->start_ns) / 1e9;
    double mibs = secs > 0 ? (double)done / (1 << 20) / secs : 0;
    fprintf(stderr, "\r%s [", p->label);
    for (int i = 0; i < width; i++)
        fputc(i < filled ? '#' : '.', stderr);
    fprintf(stderr, "] %3d%% %8.1f MiB/s", (int)(frac * 100), mibs);
    fflush(stderr);
}

void cl_progress_update(cl_progress *p, uint64_t done)
{
    if (!p->active)
        return;
    uint64_t now = cl_now_ns();
    if (now - p->last_draw_ns < 100000000ull && done < p->total)
        return;
    p->last_draw_ns = now;
    draw(p, done);
}

void cl_progress_finish(cl_progress *p)
{
    if (!p->active)
        return;
    draw(p, p->total);
    fputc('\n', stderr);
    p->active = false;
}

void cl_progress_cb(void *ctx, uint64_t done, uint64_t total)
{
    cl_progress *p = ctx;
    if (!p->start_ns) /* not started yet: the first callback brings the total */
        cl_progress_start(p, p->label, total);
    cl_progress_update(p, done);
}
