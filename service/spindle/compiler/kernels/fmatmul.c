/* Decode matmuls by float32 / float16 weights on the CPU: y[r, n] = sum_k x[r, k] * W[n, k] (+ res[r, n]).
 *
 * W stays row-major [N, K] (the layout of the checkpoint, of prefill's GEMM and of a tied embedding table).
 * A pass takes 4 consecutive weight rows (output columns; contiguous in memory) and up to 4 activation rows:
 * each 16-wide weight load feeds one FMA per activation row, the 4 x 4 accumulators are summed at the end
 * with one transpose-add, and the weights one pass ahead are prefetched into L2. One activation row (batch-1
 * decode) takes the columns one at a time instead: the weight rows are read in memory order, one stream
 * (four interleaved rows with software prefetches pulled ~0.6 of a plain read per core), prefetched along
 * as blocks.h's one-row mode says, two accumulators per column. float16 weights and
 * activations are converted in registers (F16C) and accumulate in float32; a float16 output is rounded once.
 * AVX-512 with a portable C fallback picked at run time (SPINDLE_QKERNEL=scalar forces it, as for the int8
 * kernels). spindle_fmm_sched is the parallel entry: the threads of one parallel region take ranges of
 * column blocks from a shared counter (a quarter of what is left) until none is left. The fused decode
 * blocks (spindle_fblock_*, at the end) run a decoder layer's norms, matmuls and SwiGLU around its
 * attention in one parallel region each, as the int8 kernels' blocks do (blocks.h).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "blocks.h"

#define COLS 4 /* output columns per pass */
#define ROWS 4 /* activation rows per pass */

static float h2f(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, man = h & 0x3FF, bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {
      exp = 127 - 15 + 1;
      while (!(man & 0x400)) {
        man <<= 1;
        exp--;
      }
      bits = sign | (exp << 23) | ((man & 0x3FF) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7F800000u | (man << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

static uint16_t f2h(float f) { /* round to nearest even */
  uint32_t x;
  memcpy(&x, &f, sizeof x);
  const uint32_t sign = (x >> 16) & 0x8000;
  int32_t exp = (int32_t)((x >> 23) & 0xFF) - 127 + 15;
  uint32_t man = x & 0x7FFFFF;
  if (((x >> 23) & 0xFF) == 0xFF) return (uint16_t)(sign | 0x7C00 | (man ? 0x200 : 0));
  if (exp >= 31) return (uint16_t)(sign | 0x7C00);
  if (exp <= 0) {
    if (exp < -10) return (uint16_t)sign;
    man |= 0x800000;
    const int shift = 14 - exp;
    uint32_t half = man >> shift, rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1))) half++;
    return (uint16_t)(sign | half);
  }
  uint32_t half = (uint32_t)(exp << 10) | (man >> 13), rem = man & 0x1FFF;
  if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++;
  return (uint16_t)(sign | half);
}

/* dtype codes: 0 = float32, 1 = float16 */
static float ld(const void *p, int64_t i, int dt) {
  return dt ? h2f(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

static void st(void *p, int64_t i, int dt, float v) {
  if (dt) ((uint16_t *)p)[i] = f2h(v);
  else ((float *)p)[i] = v;
}

static void fmm_scalar(const void *x, int64_t rows, const void *w, int64_t K, int64_t n0, int64_t n1, void *y,
                       const void *res, int64_t N, int adt, int wdt) {
  for (int64_t r = 0; r < rows; r++)
    for (int64_t n = n0; n < n1; n++) {
      float acc = 0.0f;
      for (int64_t k = 0; k < K; k++) acc += ld(x, r * K + k, adt) * ld(w, n * K + k, wdt);
      if (res) acc += ld(res, r * N + n, adt);
      st(y, r * N + n, adt, acc);
    }
}

#ifdef SPINDLE_X86
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c,fma")))
#define AVX512_INLINE AVX512 __attribute__((always_inline)) static inline

AVX512_INLINE __m512 load16(const void *p, int64_t i, int dt, __mmask16 m) {
  if (dt) return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)p + i));
  return _mm512_maskz_loadu_ps(m, (const float *)p + i);
}

/* The lanes of a 16-wide load that hold one of the `left` values still to do. */
static inline __mmask16 tail_mask(int64_t left) {
  return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
}

/* One value of y or res in registers (F16C), instead of ld / st's portable conversions. */
AVX512_INLINE float ld1(const void *p, int64_t i, int dt) {
  return dt ? _cvtsh_ss(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

AVX512_INLINE void st1(void *p, int64_t i, int dt, float v) {
  if (dt) ((uint16_t *)p)[i] = _cvtss_sh(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  else ((float *)p)[i] = v;
}

/* NR rows x NC (<= 4) columns from column n. */
AVX512_INLINE void fmm_block(const void *x, int NR, int NC, const void *w, int64_t K, int64_t n, void *y,
                             const void *res, int64_t N, int adt, int wdt) {
  __m512 acc[ROWS][COLS];
  for (int r = 0; r < NR; r++)
    for (int c = 0; c < NC; c++) acc[r][c] = _mm512_setzero_ps();
  const int64_t wbytes = wdt ? 2 : 4, ahead = NC * K * wbytes; /* the same place in the next pass */
  for (int64_t k = 0; k < K; k += 16) {
    const __mmask16 m = tail_mask(K - k);
    __m512 xv[ROWS];
    for (int r = 0; r < NR; r++) xv[r] = load16(x, r * K + k, adt, m);
    for (int c = 0; c < NC; c++) {
      const char *p = (const char *)w + ((n + c) * K + k) * wbytes;
      if ((k * wbytes) % 64 == 0) _mm_prefetch(p + ahead, _MM_HINT_T1);
      const __m512 wv = load16(w, (n + c) * K + k, wdt, m);
      for (int r = 0; r < NR; r++) acc[r][c] = _mm512_fmadd_ps(wv, xv[r], acc[r][c]);
    }
  }
  for (int r = 0; r < NR; r++) {
    float out[COLS];
    if (NC == COLS) { /* transpose-add: four 16-lane sums to four floats */
      const __m512 a01 = _mm512_add_ps(_mm512_unpacklo_ps(acc[r][0], acc[r][1]), _mm512_unpackhi_ps(acc[r][0], acc[r][1]));
      const __m512 a23 = _mm512_add_ps(_mm512_unpacklo_ps(acc[r][2], acc[r][3]), _mm512_unpackhi_ps(acc[r][2], acc[r][3]));
      const __m512 b = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a01), _mm512_castps_pd(a23))),
                                     _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a01), _mm512_castps_pd(a23))));
      /* lanes 4q + {0,1,2,3} hold partial sums of columns {0,1,2,3} within each 128-bit quarter q */
      const __m128 s = _mm_add_ps(_mm_add_ps(_mm512_castps512_ps128(b), _mm512_extractf32x4_ps(b, 1)),
                                  _mm_add_ps(_mm512_extractf32x4_ps(b, 2), _mm512_extractf32x4_ps(b, 3)));
      _mm_storeu_ps(out, s);
    } else {
      for (int c = 0; c < NC; c++) out[c] = _mm512_reduce_add_ps(acc[r][c]);
    }
    for (int c = 0; c < NC; c++) {
      float v = out[c];
      if (res) v += ld1(res, r * N + n + c, adt);
      st1(y, r * N + n + c, adt, v);
    }
  }
}

/* One activation row: columns [n0, n1) in memory order. x has dtype xdt, y and res adt. */
AVX512_INLINE void fmm_row(const void *x, int xdt, const void *w, int64_t K, int64_t n0, int64_t n1, void *y,
                           const void *res, int adt, int wdt) {
  /* float16 weights stream with the rolling prefetch where the CPU takes it (SmolLM2 batch-1 steps 1.18x and
   * 1.43x faster in two side-by-side runs); float32 ones without any (with it: 0.975x and 0.986x, two
   * processes alternating; its page variant was never measured) */
  const int mode = wdt && one_row_prefetch() == PREFETCH_ROLLING ? PREFETCH_ROLLING : PREFETCH_NONE;
  const int64_t wbytes = wdt ? 2 : 4;
  for (int64_t n = n0; n < n1; n++) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 32 <= K; k += 32) {
      prefetch_one_row(mode, (const char *)w + (n * K + k) * wbytes, 32 * wbytes);
      a0 = _mm512_fmadd_ps(load16(w, n * K + k, wdt, 0xFFFF), load16(x, k, xdt, 0xFFFF), a0);
      a1 = _mm512_fmadd_ps(load16(w, n * K + k + 16, wdt, 0xFFFF), load16(x, k + 16, xdt, 0xFFFF), a1);
    }
    for (; k < K; k += 16) {
      const __mmask16 m = tail_mask(K - k);
      a0 = _mm512_fmadd_ps(load16(w, n * K + k, wdt, m), load16(x, k, xdt, m), a0);
    }
    float v = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    if (res) v += ld1(res, n, adt);
    st1(y, n, adt, v);
  }
}

/* float16 activations of one row that fit are converted to float32 once (into a stack buffer) instead of
 * at every column: with them converted per column a core streamed float16 weights at 21.5 GB/s, against
 * 28.6 from a float32 row (one thread over a 230 MB matrix). */
#define ROW_STAGE 8192

AVX512 static void fmm_avx512(const void *x, int64_t rows, const void *w, int64_t K, int64_t n0, int64_t n1,
                              void *y, const void *res, int64_t N, int adt, int wdt) {
  if (rows == 1) {
    if (adt && K <= ROW_STAGE) {
      float xf[ROW_STAGE] __attribute__((aligned(64)));
      for (int64_t k = 0; k < K; k += 16) {
        const __mmask16 m = tail_mask(K - k);
        _mm512_mask_storeu_ps(xf + k, m, load16(x, k, 1, m));
      }
      fmm_row(xf, 0, w, K, n0, n1, y, res, adt, wdt);
    } else {
      fmm_row(x, adt, w, K, n0, n1, y, res, adt, wdt);
    }
    return;
  }
  const int64_t xb = adt ? 2 : 4;
  for (int64_t r0 = 0; r0 < rows; r0 += ROWS) {
    const int nr = rows - r0 < ROWS ? (int)(rows - r0) : ROWS;
    const char *xr = (const char *)x + r0 * K * xb;
    char *yr = (char *)y + r0 * N * xb;
    const char *rr = res ? (const char *)res + r0 * N * xb : NULL;
    for (int64_t n = n0; n < n1; n += COLS) {
      const int nc = n1 - n < COLS ? (int)(n1 - n) : COLS;
#define CALL(NR, NC) fmm_block(xr, NR, NC, w, K, n, yr, rr, N, adt, wdt)
#define ROWCASE(NC) switch (nr) { case 1: CALL(1, NC); break; case 2: CALL(2, NC); break; case 3: CALL(3, NC); break; default: CALL(4, NC); }
      switch (nc) {
        case 1: ROWCASE(1) break;
        case 2: ROWCASE(2) break;
        case 3: ROWCASE(3) break;
        default: ROWCASE(4) break;
      }
#undef ROWCASE
#undef CALL
    }
  }
}
#endif

static volatile int fmm_isa = -1;

/* 0 = portable C, 1 = AVX-512 (with F16C). */
int32_t spindle_fkernel_isa(void) {
  int isa = fmm_isa;
  if (isa >= 0) return isa;
  isa = 0;
#ifdef SPINDLE_X86
  const char *force = getenv("SPINDLE_QKERNEL");
  __builtin_cpu_init();
  if (!(force && strcmp(force, "scalar") == 0) && __builtin_cpu_supports("avx512f") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    isa = 1;
#endif
  fmm_isa = isa;
  return isa;
}

/* The software prefetches this copy of the kernels makes (blocks.h), fixed at the first call: the one-row
 * mode (0 none, 1 page, 2 rolling) plus 4 when the blocks ask for the next matmul's head. */
int32_t spindle_fkernel_prefetch(void) { return one_row_prefetch() | (head_prefetch() << 2); }

/* Columns [n0, n1) of y[rows, N] = x[rows, K] @ W[N, K].T (+ res); adt / wdt: 0 float32, 1 float16 (y and
 * res have the activations' dtype). */
int32_t spindle_fmm(const void *x, int64_t rows, const void *w, int64_t K, int64_t n0, int64_t n1, void *y,
                    const void *res, int64_t N, int32_t adt, int32_t wdt) {
#ifdef SPINDLE_X86
  if (spindle_fkernel_isa() == 1) {
    fmm_avx512(x, rows, w, K, n0, n1, y, res, N, adt, wdt);
    return 0;
  }
#endif
  fmm_scalar(x, rows, w, K, n0, n1, y, res, N, adt, wdt);
  return 0;
}

#define BLOCK_COLS 64 /* columns per scheduling unit */

int32_t spindle_fmm_sched(int32_t *counter, const void *x, int64_t rows, const void *w, int64_t K, int64_t N,
                          void *y, const void *res, int32_t adt, int32_t wdt) {
  const int64_t blocks = (N + BLOCK_COLS - 1) / BLOCK_COLS;
  int32_t cur = __atomic_load_n(counter, __ATOMIC_RELAXED);
  for (;;) {
    const int64_t left = blocks - cur;
    if (left <= 0) return 0;
    int64_t take = left / 4 > 1 ? left / 4 : 1;
    if (__atomic_compare_exchange_n(counter, &cur, (int32_t)(cur + take), 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
      const int64_t n0 = cur * BLOCK_COLS, n1 = (cur + take) * BLOCK_COLS < N ? (cur + take) * BLOCK_COLS : N;
      spindle_fmm(x, rows, w, K, n0, n1, y, res, N, adt, wdt);
      cur = __atomic_load_n(counter, __ATOMIC_RELAXED);
    }
  }
}

/* ---------------------------------------------------------------------------------------------------
 * Fused decode blocks of the float kernel (the phases, their sync words and the scheduling of their units
 * are blocks.h's). All activations, norm weights and matrices have one dtype `dt` (0 float32, 1 float16);
 * norms and SwiGLU compute in float32 and round once to dt, where the separate kernels round too:
 *
 *   spindle_fblock_norm_matmul:  y = rmsnorm(x) @ W.T                         (input norm + fused QKV,
 *                                                                              final norm + output head)
 *   spindle_fblock_mlp:          x2 = x + a @ Wo.T                             (o_proj + residual)
 *                                y  = x2 + swiglu(rmsnorm(x2) @ Wgu.T) @ Wd.T  (norm, gate_up, down)
 *                                z  = rmsnorm(y) @ W2.T                        (linked: the next layer's
 *                                                                              norm + QKV, or the head)
 *
 * gate_up's 2I rows are the gate rows, then the up rows (the checkpoint's order); a unit of its phase is
 * FTILE columns of h, which the thread that takes it computes from the gate and the up columns. */

#define FTILE 16 /* columns per unit of a matmul phase */

static int64_t ftiles(int64_t n) { return (n + FTILE - 1) / FTILE; }

static next_matmul fmatrix_ahead(const void *w, int64_t K, int64_t N, int dt, int32_t odd) {
  next_matmul m = {w, FTILE * K * (dt ? 2 : 4), ftiles(N), odd};
  return m;
}

#ifdef SPINDLE_X86
AVX512_INLINE void store16(void *p, int64_t i, int dt, __mmask16 m, __m512 v) {
  if (dt)
    _mm256_mask_storeu_epi16((uint16_t *)p + i, m, _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  else
    _mm512_mask_storeu_ps((float *)p + i, m, v);
}

AVX512 static void norm_row_avx512(const void *x, const void *w, float eps, int64_t K, void *out, int dt) {
  __m512 ss = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k += 16) {
    const __m512 v = load16(x, k, dt, tail_mask(K - k));
    ss = _mm512_fmadd_ps(v, v, ss);
  }
  const __m512 scale = _mm512_set1_ps(1.0f / sqrtf(_mm512_reduce_add_ps(ss) / (float)K + eps));
  for (int64_t k = 0; k < K; k += 16) {
    const __mmask16 m = tail_mask(K - k);
    store16(out, k, dt, m, _mm512_mul_ps(_mm512_mul_ps(load16(x, k, dt, m), scale), load16(w, k, dt, m)));
  }
}

AVX512 static void swiglu_avx512(const void *g, const void *u, void *h, int64_t n, int dt) {
  for (int64_t c = 0; c < n; c += 16) {
    const __mmask16 m = tail_mask(n - c);
    store16(h, c, dt, m, silu_mul_avx512(load16(g, c, dt, m), load16(u, c, dt, m)));
  }
}
#endif

/* out (dt) = x * rsqrt(mean(x^2) + eps) * w, one row of K. */
static void norm_row(const void *x, const void *w, float eps, int64_t K, void *out, int dt) {
#ifdef SPINDLE_X86
  if (spindle_fkernel_isa() == 1) {
    norm_row_avx512(x, w, eps, K, out, dt);
    return;
  }
#endif
  float ss = 0.0f;
  for (int64_t k = 0; k < K; k++) ss += ld(x, k, dt) * ld(x, k, dt);
  const float scale = 1.0f / sqrtf(ss / (float)K + eps);
  for (int64_t k = 0; k < K; k++) st(out, k, dt, ld(x, k, dt) * scale * ld(w, k, dt));
}

/* h[c] = silu(g[c]) * u[c] for c < n, in dt. */
static void swiglu(const void *g, const void *u, void *h, int64_t n, int dt) {
#ifdef SPINDLE_X86
  if (spindle_fkernel_isa() == 1) {
    swiglu_avx512(g, u, h, n, dt);
    return;
  }
#endif
  for (int64_t c = 0; c < n; c++) {
    const float gv = ld(g, c, dt);
    st(h, c, dt, gv / (1.0f + expf(-gv)) * ld(u, c, dt));
  }
}

/* The normed rows the next matmul reads: a single row that fits is normed by every caller on its own into
 * `local` (a BLOCK_LOCAL_BYTES stack buffer: K up to 8192 in float32, 16384 in float16); more rows are a
 * shared phase (a row per unit) into `shared`, which every caller waits for. Returns the buffer. */
static const void *norm_for(int32_t *sync, int32_t half, int64_t rows, const void *x, const void *w, float eps,
                            int64_t K, void *shared, void *local, int dt, const next_matmul *ahead) {
  const int64_t row_bytes = K * (dt ? 2 : 4);
  prefetch_head(ahead, half, 0);
  if (rows == 1 && row_bytes <= BLOCK_LOCAL_BYTES) {
    norm_row(x, w, eps, K, local, dt);
    return local;
  }
  int64_t r;
  while ((r = take_unit(sync, rows)) >= 0) {
    norm_row((const char *)x + r * row_bytes, w, eps, K, (char *)shared + r * row_bytes, dt);
    finish_units(sync, half, 1);
  }
  wait_phase(sync, rows);
  return shared;
}

/* Phase: y[:, n] = x @ W.T (+ res) for all N columns, W `odd` (blocks.h, next_matmul); the last phase of
 * a block asks for the head of the next VM call's matrix (`next`, NULL if none) before it waits. */
static void fphase_matmul(int32_t *sync, int32_t half, const void *x, int64_t rows, const void *w, int32_t odd,
                          int64_t K, int64_t N, void *y, const void *res, int dt, const next_matmul *next) {
  const int64_t tiles = ftiles(N);
  const int32_t own = half ^ odd;
  int64_t t0, t1;
  while (take_split(sync, tiles, own, OWN_CHUNK, 2, &t0, &t1)) {
    spindle_fmm(x, rows, w, K, t0 * FTILE, t1 * FTILE < N ? t1 * FTILE : N, y, res, N, dt, dt);
    finish_units(sync, own, t1 - t0);
  }
  prefetch_head(next, half, 1);
  wait_phase(sync, tiles);
}

/* Phase: for FTILE columns of h at a time, their gate and up columns (gu [rows, 2I]) and h = silu(gate) * up
 * ([rows, I]); a thread out of units asks for the head of the down projection (`ahead`) before it waits. */
static void fphase_gate_up(int32_t *sync, int32_t half, const void *x, int64_t rows, const void *w, int64_t K,
                           int64_t I, void *gu, void *h, int dt, const next_matmul *ahead) {
  const int64_t tiles = ftiles(I), eb = dt ? 2 : 4;
  int64_t t0, t1;
  while (take_split(sync, tiles, half, OWN_CHUNK, 2, &t0, &t1)) {
    const int64_t n0 = t0 * FTILE, n1 = t1 * FTILE < I ? t1 * FTILE : I;
    spindle_fmm(x, rows, w, K, n0, n1, gu, NULL, 2 * I, dt, dt);
    spindle_fmm(x, rows, w, K, I + n0, I + n1, gu, NULL, 2 * I, dt, dt);
    for (int64_t r = 0; r < rows; r++) {
      const char *g = (const char *)gu + (r * 2 * I + n0) * eb;
      swiglu(g, g + I * eb, (char *)h + (r * I + n0) * eb, n1 - n0, dt);
    }
    finish_units(sync, half, t1 - t0);
  }
  prefetch_head(ahead, half, 0);
  wait_phase(sync, tiles);
}

/* y[rows, N] = rmsnorm(x[rows, K]; w, eps) @ W.T. sync: 2 phases x PHASE_WORDS + SYNC_SLACK_WORDS int32,
 * zeroed; half: 0 or 1, the half of the parallel loop's iterations the call is in; xn: rows x K scratch.
 * (next_w, next_k, next_n): the matrix (next_n x next_k, dtype dt) the next VM call starts with, whose
 * head each thread asks for when it runs out of columns; has_next 0: none. */
int32_t spindle_fblock_norm_matmul(int32_t *sync, int32_t half, int64_t rows, const void *x, const void *norm_w,
                                   float eps, int64_t K, void *xn, const void *w, int64_t N, void *y, int32_t dt,
                                   int32_t has_next, const void *next_w, int64_t next_k, int64_t next_n) {
  sync = sync_lines(sync);
  if (phase_done(sync + PHASE_WORDS, ftiles(N))) return 0;
  /* the QKV (or the output head) is even, the o_proj after the attention odd (blocks.h, next_matmul) */
  const next_matmul m = fmatrix_ahead(w, K, N, dt, 0), next = fmatrix_ahead(next_w, next_k, next_n, dt, 1);
  char local[BLOCK_LOCAL_BYTES] __attribute__((aligned(64)));
  const void *xq = norm_for(sync, half, rows, x, norm_w, eps, K, xn, local, dt, &m);
  fphase_matmul(sync + PHASE_WORDS, half, xq, rows, w, m.odd, K, N, y, NULL, dt, has_next ? &next : NULL);
  return 0;
}

/* The layer after its attention (see above), and optionally ("linked") what the next VM call would
 * start with, in the same parallel region: the next layer's input norm and QKV matmul, or the final norm
 * and the output head, z = rmsnorm(y; norm2_w, eps2) @ W2.T (as spindle_qblock_mlp: one VM call and one
 * thread-pool launch less per layer; the down phase's wait is the one the norm needs anyway).
 *
 * a [rows, A] (attention output), x and y [rows, H]; gate_up [2I, H] (gate rows, then up rows); sync:
 * 6 phases x PHASE_WORDS + SYNC_SLACK_WORDS int32 (4 unlinked), zeroed; half as above. Scratch: xn and
 * x2 [rows, H] (xn holds x2's normed rows, then y's), gu [rows, 2I], h [rows, I]. The link: (w2, N2)
 * the matrix [N2, H], z [rows, N2]; w2 NULL: none (norm2_w and z are not read). next_* as for
 * spindle_fblock_norm_matmul: the matrix of the VM call after this one (unlinked: the next layer's QKV
 * or the output head; linked: the next layer's o_proj, or none). */
int32_t spindle_fblock_mlp(int32_t *sync, int32_t half, int64_t rows, const void *a, int64_t A, const void *x,
                           int64_t H, int64_t I, const void *wo, const void *norm_w, float eps, const void *wg,
                           const void *wd, void *xn, void *x2, void *gu, void *h, void *y, const void *norm2_w,
                           float eps2, const void *w2, int64_t N2, void *z, int32_t dt,
                           int32_t has_next, const void *next_w, int64_t next_k, int64_t next_n) {
  sync = sync_lines(sync);
  const int linked = w2 != NULL;
  if (linked ? phase_done(sync + 5 * PHASE_WORDS, ftiles(N2)) : phase_done(sync + 3 * PHASE_WORDS, ftiles(H)))
    return 0;
  /* mg: the gate rows, as the gate_up phase splits them (each half's first gate columns). o_proj and down
   * odd, gate_up and the linked QKV (or head) even (blocks.h, next_matmul); the next VM call starts with
   * the next layer's o_proj when linked, else with its QKV or the output head */
  const next_matmul mg = fmatrix_ahead(wg, H, I, dt, 0), md = fmatrix_ahead(wd, I, H, dt, 1),
                    m2 = fmatrix_ahead(w2, H, N2, dt, 0), next = fmatrix_ahead(next_w, next_k, next_n, dt, linked);
  const next_matmul *after_down = linked ? &m2 : has_next ? &next : NULL;
  char local[BLOCK_LOCAL_BYTES] __attribute__((aligned(64))); /* x2's normed row, then y's */
  fphase_matmul(sync, half, a, rows, wo, 1, A, H, x2, x, dt, NULL);
  const void *xq = norm_for(sync + PHASE_WORDS, half, rows, x2, norm_w, eps, H, xn, local, dt, &mg);
  fphase_gate_up(sync + 2 * PHASE_WORDS, half, xq, rows, wg, H, I, gu, h, dt, &md);
  fphase_matmul(sync + 3 * PHASE_WORDS, half, h, rows, wd, md.odd, I, H, y, x2, dt, after_down);
  if (linked) {
    const void *yq = norm_for(sync + 4 * PHASE_WORDS, half, rows, y, norm2_w, eps2, H, xn, local, dt, &m2);
    fphase_matmul(sync + 5 * PHASE_WORDS, half, yq, rows, w2, m2.odd, H, N2, z, NULL, dt, has_next ? &next : NULL);
  }
  return 0;
}
