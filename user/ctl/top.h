/* `sluicectl top`: a live terminal view of the admin endpoint, redrawn each
 * second from two /status samples (rates are differences over the time
 * between them). Quits on `q`, ^C, or after ITERATIONS frames (0: never).
 */
#ifndef SLUICE_CTL_TOP_H
#define SLUICE_CTL_TOP_H

/* Returns the process exit code: 0, or 1 when the endpoint went away. */
int top_run(const char *addr, int iterations);

#endif
