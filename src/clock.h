/* clock: the clocks ncghl reads, as seconds in a double. clock_wall is
 * Unix time (stored timestamps, due times, what people read); clock_mono
 * never jumps with the wall clock (durations, deadlines, rate windows);
 * clock_thread is the calling thread's CPU time (how busy the loop is). */
#ifndef NCGHL_CLOCK_H
#define NCGHL_CLOCK_H

/* Seconds since the Unix epoch (CLOCK_REALTIME), microsecond precision or
 * better. */
double clock_wall(void);
/* Seconds on CLOCK_MONOTONIC: only differences mean anything. */
double clock_mono(void);
/* CPU seconds the calling thread has used (CLOCK_THREAD_CPUTIME_ID). */
double clock_thread(void);

#endif
