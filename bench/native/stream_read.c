/* Streaming read bandwidth: every thread sums its contiguous share of one array with 8 x 16 float lanes of
 * independent accumulators (no dependency through memory, enough loads in flight to keep a core's share of
 * the memory system busy). Built by bench/compile_bandwidth.py with the system C compiler.
 *
 * spindle_stream_read_chunks reads the same array as a decode step's fused blocks read a model's weights:
 * thread t sums chunks t, t + threads, t + 2 * threads, ... (each thread's half of one matrix after
 * another, two threads side by side), so each thread's stream restarts every chunk.
 * spindle_stream_read_segments gives each thread its own list of segments and makes the threads meet
 * after each one, as the blocks' threads wait for each other between phases. */
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define LANES 16
#define ACCS 8
#define STEP (LANES * ACCS)
#define MAX_THREADS 64

typedef struct {
  const float *p;
  size_t n, chunk, stride; /* chunk 0: p[0 .. n) at once; else n floats in chunks `stride` floats apart */
  const int64_t *segs;     /* if not NULL: nsegs (offset, length) pairs in floats, read in order */
  int64_t nsegs;
  int *meet, threads;      /* with segs: a counter the threads meet at after each segment */
  double sum;
  int *ready, *go; /* go: 0 wait, 1 read, -1 leave */
} share_t;

static double sum_range(const float *p, size_t n) {
  float acc[ACCS][LANES] = {{0}};
  for (size_t i = 0; i + STEP <= n; i += STEP)
    for (int k = 0; k < ACCS; k++)
      for (int l = 0; l < LANES; l++) acc[k][l] += p[i + LANES * k + l];
  double total = 0.0;
  for (int k = 0; k < ACCS; k++)
    for (int l = 0; l < LANES; l++) total += acc[k][l];
  return total;
}

/* Wait until all `threads` threads have arrived for the `round`-th time (a counter that only grows). */
static void meet(int *count, int threads, int64_t round) {
  __atomic_add_fetch(count, 1, __ATOMIC_ACQ_REL);
  while (__atomic_load_n(count, __ATOMIC_ACQUIRE) < threads * (round + 1)) {
  }
}

static double sum_share(const share_t *s) {
  if (s->segs) {
    double total = 0.0;
    for (int64_t i = 0; i < s->nsegs; i++) {
      total += sum_range(s->p + s->segs[2 * i], (size_t)s->segs[2 * i + 1]);
      meet(s->meet, s->threads, i);
    }
    return total;
  }
  if (s->chunk == 0) return sum_range(s->p, s->n);
  double total = 0.0;
  for (size_t done = 0, c = 0; done < s->n; done += s->chunk, c++) total += sum_range(s->p + c * s->stride, s->chunk);
  return total;
}

static void *worker(void *arg) {
  share_t *s = (share_t *)arg;
  __atomic_add_fetch(s->ready, 1, __ATOMIC_ACQ_REL);
  int go;
  while ((go = __atomic_load_n(s->go, __ATOMIC_ACQUIRE)) == 0) {
  }
  if (go > 0) s->sum = sum_share(s);
  return NULL;
}

/* Runs shares[0] on the calling thread and the others on threads of their own, all starting together.
 * *seconds: from the moment every thread is ready to the end of the last one. Returns the sum of the
 * shares' sums, or -1 when a thread could not be started. */
static double run_shares(share_t *shares, int threads, int *ready, int *go, double *seconds) {
  pthread_t tid[MAX_THREADS];
  int started = 1;
  for (; started < threads; started++)
    if (pthread_create(&tid[started], NULL, worker, &shares[started]) != 0) break;
  if (started < threads) {
    __atomic_store_n(go, -1, __ATOMIC_RELEASE);
    for (int t = 1; t < started; t++) pthread_join(tid[t], NULL);
    return -1.0;
  }
  while (__atomic_load_n(ready, __ATOMIC_ACQUIRE) < threads - 1) {
  }
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  __atomic_store_n(go, 1, __ATOMIC_RELEASE);
  double total = sum_share(&shares[0]);
  for (int t = 1; t < threads; t++) {
    pthread_join(tid[t], NULL);
    total += shares[t].sum;
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  *seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
  return total;
}

/* Sums p[0 .. n) with `threads` threads (1..64, the calling thread one of them). chunk 0: each thread a
 * contiguous share of n / threads floats (a multiple of 128); else chunks of `chunk` floats (a multiple of
 * 128 that divides n / threads), thread t summing every threads-th one from chunk t. *seconds: from the
 * moment every thread is ready to the end of the last one. Returns the sum, or -1 when a thread could not
 * be started. */
double spindle_stream_read_chunks(const float *p, int64_t n, int32_t threads, int64_t chunk, double *seconds) {
  share_t shares[MAX_THREADS];
  int ready = 0, go = 0;
  if (threads < 1) threads = 1;
  if (threads > MAX_THREADS) threads = MAX_THREADS;
  const size_t each = (size_t)n / (size_t)threads;
  for (int t = 0; t < threads; t++)
    shares[t] = chunk > 0 ? (share_t){p + (size_t)t * (size_t)chunk, each, (size_t)chunk,
                                      (size_t)chunk * (size_t)threads, NULL, 0, NULL, 0, 0.0, &ready, &go}
                          : (share_t){p + (size_t)t * each, each, 0, 0, NULL, 0, NULL, 0, 0.0, &ready, &go};
  return run_shares(shares, threads, &ready, &go, seconds);
}

/* Thread t sums the segments segs[t][0 .. nsegs) ((offset, length) pairs in floats from p, lengths
 * multiples of 128) in order, all threads meeting after each segment. *seconds and the result as above. */
double spindle_stream_read_segments(const float *p, int32_t threads, const int64_t *segs, int64_t nsegs,
                                    double *seconds) {
  share_t shares[MAX_THREADS];
  int ready = 0, go = 0, count = 0;
  if (threads < 1) threads = 1;
  if (threads > MAX_THREADS) threads = MAX_THREADS;
  for (int t = 0; t < threads; t++)
    shares[t] = (share_t){p, 0, 0, 0, segs + 2 * nsegs * t, nsegs, &count, threads, 0.0, &ready, &go};
  return run_shares(shares, threads, &ready, &go, seconds);
}

double spindle_stream_read_sum(const float *p, int64_t n, int32_t threads, double *seconds) {
  return spindle_stream_read_chunks(p, n, threads, 0, seconds);
}
