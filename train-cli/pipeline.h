/* pipeline.h — a three-stage pipeline for `condseg predict` over many images: a reader
 * thread loads item i+1.. while the calling thread runs the network on item i and a writer
 * thread stores item i-1.., each stage in input order. On a small CPU decoding, resizing
 * and PNG encoding take as long as a small network, so overlapping them is most of the
 * speed of a folder. */
#ifndef CONDSEG_CLI_PIPELINE_H
#define CONDSEG_CLI_PIPELINE_H

typedef void (*cli_stage_fn)(void *item, void *user_data);

typedef struct {
    cli_stage_fn load;   /* reader thread */
    cli_stage_fn run;    /* the calling thread (the network, whose threads are its own) */
    cli_stage_fn store;  /* writer thread; the last stage to see an item */
    void *user_data;
    double busy[3];      /* out: seconds spent in load, run and store, which tell what
                          * bounds the rate (the slowest stage) */
} cli_pipeline;

/* Passes each of items[0..n) through load, run and store, in order within each stage, at
 * most `depth` items between load and the end of store (their memory is bounded). */
void cli_pipeline_run(cli_pipeline *p, void **items, int n, int depth);

#endif
