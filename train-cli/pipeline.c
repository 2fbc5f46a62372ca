/* pipeline.c — the reader / network / writer pipeline of pipeline.h, over GLib threads and
 * asynchronous queues: one queue hands loaded items to the network, one hands computed
 * items to the writer, and a queue of tokens, returned by the writer, bounds how many
 * items are in flight. */
#include <glib.h>

#include "pipeline.h"

typedef struct {
    cli_pipeline *p;
    void **items;
    int n;
    GAsyncQueue *tokens, *loaded, *computed;
} pipeline_state;

#define TOKEN GINT_TO_POINTER(1) /* GAsyncQueue refuses NULL */

/* Runs stage `k` on `item`, adding its time to p->busy[k] (each stage has one thread). */
static void timed(cli_pipeline *p, int k, void *item) {
    const cli_stage_fn stages[3] = {p->load, p->run, p->store};
    const gint64 start = g_get_monotonic_time();
    stages[k](item, p->user_data);
    p->busy[k] += (double)(g_get_monotonic_time() - start) * 1e-6;
}

static gpointer reader(gpointer data) {
    pipeline_state *s = data;
    for (int i = 0; i < s->n; i++) {
        g_async_queue_pop(s->tokens);
        timed(s->p, 0, s->items[i]);
        g_async_queue_push(s->loaded, s->items[i]);
    }
    return NULL;
}

static gpointer writer(gpointer data) {
    pipeline_state *s = data;
    for (int i = 0; i < s->n; i++) {
        void *item = g_async_queue_pop(s->computed);
        timed(s->p, 2, item);
        g_async_queue_push(s->tokens, TOKEN);
    }
    return NULL;
}

void cli_pipeline_run(cli_pipeline *p, void **items, int n, int depth) {
    pipeline_state s = {p, items, n, g_async_queue_new(), g_async_queue_new(),
                        g_async_queue_new()};
    for (int i = 0; i < (depth > 0 ? depth : 1); i++) g_async_queue_push(s.tokens, TOKEN);
    GThread *read = g_thread_new("condseg-read", reader, &s);
    GThread *write = g_thread_new("condseg-write", writer, &s);
    for (int i = 0; i < n; i++) {
        void *item = g_async_queue_pop(s.loaded);
        timed(p, 1, item);
        g_async_queue_push(s.computed, item);
    }
    g_thread_join(read);
    g_thread_join(write);
    g_async_queue_unref(s.tokens);
    g_async_queue_unref(s.loaded);
    g_async_queue_unref(s.computed);
}
