#ifndef SPINDLE_BLOCKS_H
#define SPINDLE_BLOCKS_H

#include <math.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#ifndef SPINDLE_X86
#define SPINDLE_X86 1
#endif
#include <immintrin.h>
#endif

/* The phase machinery of Spindle's fused decode blocks (qmatmul.c: the int8 kernels' blocks, fmatmul.c:
 * the float kernel's), included by both sources: one VM call and one parallel region for what a decoder
 * layer does around its attention, instead of a kernel (and a thread-pool launch) per norm, activation
 * quantization, matmul and SwiGLU.
 *
 * Every thread of the caller's parallel loop calls the entry with the same zeroed `sync` array and runs
 * the phases in order. A phase is a set of units (activation rows to norm or quantize, column tiles or groups)
 * that threads take as they go; a thread that finds nothing left to take waits until the phase's `done`
 * counters (one per half) add up to every unit, then moves on. Only units in flight are waited for: a
 * thread that the OS preempts before taking anything holds up nobody, and a parallel-loop iteration that
 * runs after its thread's first one finds every phase done and returns at once.
 *
 * Every wait costs most when the two threads run on cores that share no cache (on these hosts that is
 * the state in which the machine streams twice as fast): the waiting thread then reads what the other
 * one wrote from that core's cache. So a block waits only where it must, after a matmul whose every
 * column the next step reads. A single activation row is normed (and quantized, for the int8 kernels) by
 * every caller on its own (its norm needs the whole row, which each has after the previous wait), and the
 * gate_up phase applies SwiGLU (and quantizes h for the down projection) group by group as it computes
 * it: the MLP block waits three times, not six.
 *
 * A matmul phase splits its tiles into two halves, one per end of the parallel loop (`half`: which half of
 * the loop's iterations the caller is). A thread streams its own half from the bottom in chunks of
 * OWN_CHUNK tiles, so its reads are one contiguous stream that the hardware prefetcher runs ahead of; when its half
 * is taken it steals from the top of the other half, a quarter of what is left at a time. Two threads
 * that both run read one contiguous half each (in a synthetic 30-layer step: 38 GB/s against 35 for one
 * shared guided counter); one that is late or preempted leaves its half to the other. */

/* A phase's words are two cache lines, one per half of the parallel loop: each holds the tiles taken
 * from that half and the units finished by that half's callers, so that a thread's bookkeeping (an atomic
 * add per chunk of tiles) stays in its own core's cache; the other core reads the line only when it waits
 * for the phase or steals from that half. (With one shared counter line, taken from the other core at
 * every add, perf put half of a SmolLM2 step's matmul-phase samples, outside the kernels, on that add.) */
enum {
  PHASE_RANGE = 0,  /* int64 in each half's line: tiles taken from the bottom (low 32 bits) and top (high
                       32 bits) of that half */
  PHASE_DONE = 2,   /* in each half's line: units finished by that half's callers */
  PHASE_TAKE = 3,   /* in half 0's line: rows taken (quantize phases) */
  HALF_WORDS = 16,  /* one 64-byte line */
  PHASE_WORDS = 2 * HALF_WORDS,
  SYNC_SLACK_WORDS = HALF_WORDS /* a block's sync array has this many words more, to align it to a line */
};
/* Tiles a thread takes from its own half at a time. Every take and every report of finished units is an
 * atomic read-modify-write, which on x86 waits for the thread's loads in flight, and a stolen range starts
 * a new stream below the last one, so fewer, larger takes keep each thread's stream going. With 64, a
 * thread takes its whole half of most of a layer's matrices at once (SmolLM2: 18 to 48 tiles) and the
 * output head's in 24 takes. In a synthetic SmolLM2-shaped q4_1 step on two threads (30 linked MLP
 * blocks and the head, 96 MB), 4, 16 and 64 tiles ran within 0.5% of each other with the cores in their
 * slow state, alternating step by step in one process; in a fast minute, run after run, 8 and 16 tiles
 * took 1.55 and 1.53 ms against 1.63 for 4. A thread that starts late still leaves the other its
 * untaken tiles; what the other cannot take is the one chunk in flight. */
#define OWN_CHUNK 64

/* The first 64-byte boundary in a block's sync array (every caller computes the same one). */
static int32_t *sync_lines(int32_t *sync) { return (int32_t *)(((uintptr_t)sync + 63) & ~(uintptr_t)63); }

static int64_t units_done(const int32_t *sync) {
  return (int64_t)__atomic_load_n(sync + PHASE_DONE, __ATOMIC_ACQUIRE) +
         __atomic_load_n(sync + HALF_WORDS + PHASE_DONE, __ATOMIC_ACQUIRE);
}

static void wait_phase(const int32_t *sync, int64_t total) {
  int spins = 0;
  while (units_done(sync) < total) {
#ifdef SPINDLE_X86
    _mm_pause();
#endif
    if (++spins > 2000) {
      spins = 0;
      sched_yield();
    }
  }
}

static void finish_units(int32_t *sync, int32_t half, int64_t n) {
  __atomic_fetch_add(sync + (half ? HALF_WORDS : 0) + PHASE_DONE, (int32_t)n, __ATOMIC_RELEASE);
}

/* The next unit of a phase of `total` single units (rows), or -1. A plain load first: once the units are
 * taken, callers only read the counter's line instead of taking it from the other core. */
static int64_t take_unit(int32_t *sync, int64_t total) {
  if (__atomic_load_n(sync + PHASE_TAKE, __ATOMIC_RELAXED) >= total) return -1;
  const int32_t u = __atomic_fetch_add(sync + PHASE_TAKE, 1, __ATOMIC_RELAXED);
  return u < total ? u : -1;
}

/* Whether a phase of `total` units is finished: a parallel-loop iteration that runs after its thread's first
 * one (the loop has PARALLEL_SLOTS iterations for however many threads) finds the block's last phase done
 * and returns without touching the other phases' counters. */
static int phase_done(const int32_t *sync, int64_t total) { return units_done(sync) >= total; }

/* A block's stack buffer for one row of activations: a thread that norms (and quantizes) the only row
 * itself needs no other thread's result and waits for nobody. */
#define BLOCK_LOCAL_BYTES 32768

/* The next units [*t0, *t1) of a matmul phase of `tiles` units for a caller of half `half` (see above), or
 * 0 when none is left: from its own half `own` units at a time, from the other half a quarter of what is
 * left, at least `least`. */
static int take_split(int32_t *sync, int64_t tiles, int32_t half, int64_t own, int64_t least, int64_t *t0,
                      int64_t *t1) {
  const int64_t mid = tiles / 2;
  for (int pass = 0; pass < 2; pass++) {
    const int r = pass == 0 ? (half != 0) : (half == 0);
    int64_t *state = (int64_t *)(sync + (r ? HALF_WORDS : 0) + PHASE_RANGE);
    const int64_t base = r ? mid : 0, size = r ? tiles - mid : mid;
    int64_t cur = __atomic_load_n(state, __ATOMIC_RELAXED);
    for (;;) {
      const int64_t lo = cur & 0xFFFFFFFF, hi = cur >> 32, left = size - lo - hi;
      if (left <= 0) break;
      int64_t n;
      if (pass == 0) {
        n = left < own ? left : own;
      } else {
        n = left / 4 > least ? left / 4 : least;
        if (n > left) n = left;
      }
      const int64_t next = pass == 0 ? cur + n : cur + (n << 32);
      if (__atomic_compare_exchange_n(state, &cur, next, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
        if (pass == 0) {
          *t0 = base + lo;
          *t1 = base + lo + n;
        } else {
          *t1 = base + size - hi;
          *t0 = *t1 - n;
        }
        return 1;
      }
    }
  }
  return 0;
}

/* A matmul a thread prefetches the start of (the next phase's, or the next VM call's): its matrix, the
 * bytes of a unit of its columns (a tile), and its tiles, split in two halves as a matmul phase splits them.
 *
 * `odd`: the threads take this matrix's halves the other way round (a caller of half h streams half
 * h ^ 1). A decode step's matrices lie in memory in the order the blocks read them (a layer's QKV, o_proj,
 * gate_up, down, then the next layer's QKV; the norms' few KB between them), and the blocks take every
 * other one as odd (o_proj and down), so where one thread's half of a matrix ends,
 * its half of the next one begins: each thread's stream restarts at every other matrix instead of every
 * one. Replaying a SmolLM2 q4_1 step's reads (bench/compile_bandwidth.py --step-layouts), that read
 * 1.04-1.05x faster with the cores in their fast state, 1.005x in the slow one. The float blocks
 * (fmatmul.c) do the same; their gate_up phase reads two streams (the gate rows and the up rows), of
 * which the gate rows run on from o_proj and the up rows into down. */
typedef struct {
  const void *qweight;
  int64_t tile_bytes, tiles;
  int32_t odd;
} next_matmul;
#define SPINDLE_BLOCKS_ODD_MATRICES 1 /* for bench/block_core.c, which presets the other thread's halves */

/* Software prefetches, through volatile asm on x86: GCC 12 takes a helper whose only effects are
 * _mm_prefetch / __builtin_prefetch calls for a function without side effects and deletes every call to it
 * that it has not inlined by then (the kernels' target attributes keep such helpers out of its early
 * inliner). That removed the page prefetch below from 0fa2749 on and the next matmul's head prefetch from
 * 14c99fe on, unseen; the helpers are now inlined into their callers and their prefetches are asm that
 * stays (tests/compiler/test_prefetch.py looks for them in the compiled code). */
#ifdef SPINDLE_X86
#define PREFETCH_L1(p) __asm__ volatile("prefetcht0 %0" : : "m"(*(const char *)(p)))
#define PREFETCH_L2(p) __asm__ volatile("prefetcht1 %0" : : "m"(*(const char *)(p)))
/* p + off (a constant) into L2, the offset written into the instruction */
#define PREFETCH_L2_AT(p, off) __asm__ volatile("prefetcht1 %c1(%0)" : : "r"(p), "i"(off))
#else
#define PREFETCH_L1(p) __builtin_prefetch((p), 0, 3)
#define PREFETCH_L2(p) __builtin_prefetch((p), 0, 2)
#define PREFETCH_L2_AT(p, off) __builtin_prefetch((const char *)(p) + (off), 0, 2)
#endif
#define PREFETCH_INLINE __attribute__((always_inline)) static inline

/* How a one-row pass (batch-1 decode) helps the hardware prefetcher along its weight stream:
 *   PREFETCH_ROLLING: every line ROLL_AHEAD bytes ahead into L2, one prefetch per line it reads;
 *   PREFETCH_PAGE:    at the start of each 4 KB page, the first line of the page PAGE_AHEAD bytes on;
 *   PREFETCH_NONE:    nothing.
 * Intel cores (a Xeon host, 2 vCPUs): one thread over 256 MB of SmolLM2-wide tiles streamed q8_0 and q4_1 at
 * 13-14 GB/s with none or page against 18-20 for a plain read of the same memory, at 0.93-0.97 of the plain
 * read with rolling (float16 above it: its conversions no longer wait for memory); 3 to 16 KB ahead read
 * alike, 1 KB or into L1 less. SmolLM2 batch-1 steps, rolling against none: q4_1 1.23x / 1.53x, q8_0 1.54x /
 * 1.41x, float16 1.43x / 1.18x faster (one process against the previous build / two processes alternating);
 * float32 0.975x and 0.986x, so the float kernel's float32 passes go without (fmatmul.c, fmm_row). AMD
 * cores (Zen 4 hosts) take page: a rolling prefetch made their passes
 * slower, the page prefetch made q4_1 steps 1.018x and q8_0 1.063x faster (docs/performance.md).
 * SPINDLE_PREFETCH=rolling|page|none overrides the choice (side-by-side runs). */
enum { PREFETCH_NONE = 0, PREFETCH_PAGE = 1, PREFETCH_ROLLING = 2 };
#define ROLL_AHEAD 8192
#define PAGE_AHEAD 8192
static volatile int one_row_mode = -1;

static int one_row_prefetch(void) {
  int m = one_row_mode;
  if (m >= 0) return m;
  const char *force = getenv("SPINDLE_PREFETCH");
  if (force && strcmp(force, "rolling") == 0) {
    m = PREFETCH_ROLLING;
  } else if (force && strcmp(force, "page") == 0) {
    m = PREFETCH_PAGE;
  } else if (force && strcmp(force, "none") == 0) {
    m = PREFETCH_NONE;
  } else {
#ifdef SPINDLE_X86
    __builtin_cpu_init();
    m = __builtin_cpu_is("intel") ? PREFETCH_ROLLING : PREFETCH_PAGE;
#else
    m = PREFETCH_PAGE;
#endif
  }
  one_row_mode = m;
  return m;
}

/* The prefetch of one-row mode `mode` for the part [p, p + bytes) of a pass's stream (bytes a multiple of 64). */
PREFETCH_INLINE void prefetch_one_row(int mode, const void *p, int64_t bytes) {
  if (mode == PREFETCH_ROLLING) {
    for (int64_t b = 0; b < bytes; b += 64) PREFETCH_L2_AT((const char *)p + b, ROLL_AHEAD);
  } else if (mode == PREFETCH_PAGE) {
    const uintptr_t a = (uintptr_t)p;
    if ((a & 4095) < (uintptr_t)bytes) PREFETCH_L2((a & ~(uintptr_t)4095) + PAGE_AHEAD);
  }
}

#ifndef SPINDLE_HEAD_PREFETCH
#define SPINDLE_HEAD_PREFETCH 8192
#endif
static volatile int head_mode = -1;

/* Whether the blocks ask for the head of the next matmul (prefetch_head): yes, unless SPINDLE_PREFETCH_HEAD=0.
 * On the Intel host, SmolLM2 batch-1 steps with it against without (both with the rolling prefetch): q4_1
 * 1.045x and 1.059x, q8_0 1.030x and 1.044x, float16 1.013x in one process; q4_1 1.011x and q8_0 1.004x in
 * two processes alternating; on the AMD hosts 32 KB against 8 KB read 1.04-1.14x (docs/performance.md). */
static int head_prefetch(void) {
  int m = head_mode;
  if (m >= 0) return m;
  const char *force = getenv("SPINDLE_PREFETCH_HEAD");
  m = force ? strcmp(force, "0") != 0 : 1;
  head_mode = m;
  return m;
}

/* Ask for the first bytes this thread's half of the next matmul streams: the hardware prefetcher needs a
 * few misses to pick a new stream up, and a thread waiting for a quantize phase has nothing else to do.
 * With `l2` into the core's L2 only, and four times as much: for a matmul of the next VM call, which the
 * work in between (the attention reads the cached keys and values through L1) would push out of L1. */
PREFETCH_INLINE void prefetch_head(const next_matmul *m, int32_t half, int l2) {
  if (SPINDLE_HEAD_PREFETCH == 0 || !m || !head_prefetch()) return;
  half ^= m->odd;
  const int64_t mid = m->tiles / 2, first = half ? mid : 0, own = (half ? m->tiles - mid : mid) * m->tile_bytes;
  const int64_t limit = l2 ? 4 * SPINDLE_HEAD_PREFETCH : SPINDLE_HEAD_PREFETCH;
  const int64_t bytes = own < limit ? own : limit;
  const char *p = (const char *)m->qweight + first * m->tile_bytes;
  for (int64_t b = 0; b < bytes; b += 64) {
    if (l2)
      PREFETCH_L2(p + b);
    else
      PREFETCH_L1(p + b);
  }
}

#ifdef SPINDLE_X86
#define BLOCKS_AVX512_INLINE __attribute__((target("avx512f,fma"), always_inline)) static inline

/* exp(x) for x <= 0 (SwiGLU's exp(-g) where it matters; larger x saturate to +inf as expf does): 2^n * p(r)
 * with r = x - n ln2 in [-ln2/2, ln2/2] and a degree-6 polynomial (relative error ~2e-7). */
BLOCKS_AVX512_INLINE __m512 exp_avx512(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

/* silu(g) * u of 16 lanes. */
BLOCKS_AVX512_INLINE __m512 silu_mul_avx512(__m512 g, __m512 u) {
  const __m512 e = exp_avx512(_mm512_sub_ps(_mm512_setzero_ps(), g));
  return _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.0f), e)), u);
}
#endif

#endif /* SPINDLE_BLOCKS_H */
