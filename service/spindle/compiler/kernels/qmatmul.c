/* Integer-dot kernels for matmuls by GGUF block-quantized weights (q4_1, q8_0) on the CPU.
 *
 * Activations are quantized per row to int8 in groups of 32 (spindle_qact_quantize), once per matmul
 * call. The weights are the stored GGUF blocks, arranged in column tiles (spindle/compiler/quantization.py,
 * `to_tiles`): for each tile of 16 output columns and each group g of 32 inputs,
 *
 *   q4_1: 320 bytes: [0, 256) codes [j = 0..3][c = 0..15][b = 0..3]: low nibble = code of k = 32g + 8j + b
 *         of column c, high nibble = code of k = 32g + 8j + 4 + b; [256, 288) the 16 columns' fp16 scales,
 *         [288, 320) their fp16 minimums. A tile is one contiguous run of 5 cache lines per group, so a
 *         one-row pass over it is a single forward stream (one stream per core is what the hardware
 *         prefetcher follows best; the pass helps it along as blocks.h's one-row prefetch mode says).
 *   q8_0: groups in pairs of 1088 bytes: the codes of g (512 bytes [j = 0..7][c = 0..15][b = 0..3] = code
 *         of k = 32g + 4j + b), the codes of g + 1, then the 16 fp16 scales of g and those of g + 1 (an
 *         odd last group has a zero partner that is never read). A tile is again one forward stream.
 *
 * so that one 64-byte load holds 4 (q8_0) or 8 (q4_1) consecutive inputs of 16 columns, 4 bytes per 32-bit
 * lane, and vpdpbusd against 4 activation bytes broadcast to every lane accumulates the 16 columns at once:
 * no horizontal reductions, one scale vector per group and tile, one vector store per row and tile:
 *
 *   q4_1: y = sum_g dw[g] * dx[g] * dot(code_w, q_x)[g] + sum_g mw[g] * sx[g]
 *   q8_0: y = sum_g dw[g] * dx[g] * dot(w, q_x)[g]
 *
 * plus res[r, n] when a residual is given (added to the finished sum as it is stored: the one float add a
 * separate elementwise kernel would do). Here dx[g] = max|x_g| / 127, q_x = rint(x / dx), sx[g] = dx[g] *
 * sum(q_x)[g]. The dots are exact integer sums; the float part is one multiply-add per group. Rows share
 * each decoded weight vector (up to 8 rows per pass); a pass reads one tile, so that a thread reads one
 * stream (two tiles per pass, sharing the activation broadcasts, read ~0.6-0.8 of the memory speed). Two
 * implementations, picked at run time: AVX-512 VNNI (vpdpbusd: u8 x s8 -> s32) and portable C (same layout).
 * SPINDLE_QKERNEL=scalar forces the portable one.
 *
 * Activation scratch layout, one row of spindle_qact_row_bytes(K) bytes per activation row:
 *   [0, K)             int8 q_x in order
 *   [K, K + 4G)        float dx[G]
 *   [K + 4G, K + 8G)   float sx[G]
 *
 * vpdpbusd multiplies unsigned by signed bytes: the q8_0 path feeds it the weights as w + 128 (xor 0x80)
 * and takes 128 * sum(q_x) back out per group as a float term, sum_g (-128 dw[g]) * sx[g], like q4_1's
 * minimum term (the integer dots are exact, the float rounding stays ~1e-7 of the group's terms).
 *
 * spindle_qmm_sched is the parallel entry: every thread that calls it takes ranges of tiles from a
 * shared counter (guided self-scheduling: a quarter of what is left, at least two tiles) until none is
 * left, so a thread the OS preempts does not hold up the others at the end of the matmul.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "blocks.h"

#define QK 32

int64_t spindle_qact_row_bytes(int64_t K) {
  int64_t bytes = K + 8 * (K / QK);
  return (bytes + 63) / 64 * 64;
}

static float half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, man = h & 0x3FF, bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else { /* subnormal: normalise */
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

/* ---------------------------------------------------------------------------------------------------
 * Activation quantization (shared by both implementations, so they see identical q_x). */

/* One group of 32: q = rint(x * 127 / max|x|) (round half to even, as the vector conversion rounds). */
static int32_t quantize_group_scalar(const float *xg, int8_t *q, float *d) {
  float amax = 0.0f;
  for (int i = 0; i < QK; i++) amax = fmaxf(amax, fabsf(xg[i]));
  const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
  int32_t sum = 0;
  for (int i = 0; i < QK; i++) {
    float v = rintf(xg[i] * id);
    v = v > 127.0f ? 127.0f : (v < -127.0f ? -127.0f : v);
    q[i] = (int8_t)v;
    sum += q[i];
  }
  *d = amax / 127.0f;
  return sum;
}

#ifdef SPINDLE_X86
#define QUANT_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))

QUANT_AVX512 static int32_t quantize_group_avx512(const float *xg, int8_t *q, float *d) {
  const __m512 a = _mm512_loadu_ps(xg), b = _mm512_loadu_ps(xg + 16);
  const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
  const __m512 id = _mm512_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
  /* |x * id| <= 127 up to rounding; the saturating narrowing clamps to [-128, 127] and rint(127.0x) = 127 */
  const __m512i qa = _mm512_cvtps_epi32(_mm512_mul_ps(a, id)), qb = _mm512_cvtps_epi32(_mm512_mul_ps(b, id));
  _mm_storeu_si128((__m128i *)q, _mm512_cvtsepi32_epi8(qa));
  _mm_storeu_si128((__m128i *)(q + 16), _mm512_cvtsepi32_epi8(qb));
  *d = amax / 127.0f;
  return _mm512_reduce_add_epi32(_mm512_add_epi32(qa, qb));
}

/* v = xg * scale * wg for one group (multiplied in that order, as the portable loop does). */
QUANT_AVX512 static void scale_group_avx512(const float *xg, const float *wg, float scale, float *v) {
  const __m512 s = _mm512_set1_ps(scale);
  _mm512_storeu_ps(v, _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(xg), s), _mm512_loadu_ps(wg)));
  _mm512_storeu_ps(v + 16, _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(xg + 16), s), _mm512_loadu_ps(wg + 16)));
}

/* sum(x[k]^2) for k < K (a multiple of 32), in 32 lanes. */
QUANT_AVX512 static float sum_squares_avx512(const float *x, int64_t K) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k += 32) {
    const __m512 a = _mm512_loadu_ps(x + k), b = _mm512_loadu_ps(x + k + 16);
    s0 = _mm512_add_ps(s0, _mm512_mul_ps(a, a));
    s1 = _mm512_add_ps(s1, _mm512_mul_ps(b, b));
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}
#endif

static int use_vector_kernels(void);

/* fmt (0 = q8_0, 1 = q4_1) is accepted for the calling convention: both formats read q_x in order. */
int32_t spindle_qact_quantize(const float *x, int64_t K, int8_t *dst, int32_t fmt) {
  (void)fmt;
  const int64_t G = K / QK;
  float *dx = (float *)(dst + K), *sx = dx + G;
  const int vector = use_vector_kernels();
  for (int64_t g = 0; g < G; g++) {
    int8_t q[QK];
    float d;
#ifdef SPINDLE_X86
    const int32_t sum = vector ? quantize_group_avx512(x + g * QK, q, &d) : quantize_group_scalar(x + g * QK, q, &d);
#else
    (void)vector;
    const int32_t sum = quantize_group_scalar(x + g * QK, q, &d);
#endif
    dx[g] = d;
    sx[g] = d * (float)sum;
    memcpy(dst + g * QK, q, QK);
  }
  return 0;
}

/* ---------------------------------------------------------------------------------------------------
 * Column tiles. */

#define TILE 16
#define Q4_1_GROUP_BYTES 320 /* per tile and group: codes, scales, minimums */
#define Q4_1_SCALES 256      /* byte offsets in a group */
#define Q4_1_MINS 288
#define Q8_0_PAIR_BYTES 1088 /* per tile and pair of groups: codes, codes, scales, scales */

static int64_t q8_0_tile_bytes(int64_t G) { return (G + 1) / 2 * Q8_0_PAIR_BYTES; }
static int64_t q8_0_codes(int64_t g) { return g / 2 * Q8_0_PAIR_BYTES + g % 2 * 512; }
static int64_t q8_0_scales(int64_t g) { return g / 2 * Q8_0_PAIR_BYTES + 1024 + g % 2 * 32; }

/* Columns [n0, n1) of tile t as a mask of its 16 lanes. */
static uint32_t tile_columns(int64_t t, int64_t n0, int64_t n1) {
  const int64_t lo = n0 > t * TILE ? n0 - t * TILE : 0, hi = n1 < (t + 1) * TILE ? n1 - t * TILE : TILE;
  if (hi <= lo) return 0;
  return (uint32_t)(((1u << (hi - lo)) - 1) << lo);
}

/* ---------------------------------------------------------------------------------------------------
 * Portable implementation (the same layout). */

static void q4_1_scalar(const int8_t *act, int64_t astride, int64_t rows, const uint8_t *qw, int64_t K, int64_t n0,
                        int64_t n1, float *y, const float *res, int64_t ystride) {
  const int64_t G = K / QK;
  for (int64_t n = n0; n < n1; n++) {
    const int64_t t = n / TILE, c = n % TILE;
    for (int64_t r = 0; r < rows; r++) {
      const int8_t *q = act + r * astride;
      const float *dx = (const float *)(q + K), *sx = dx + G;
      float acc = 0.0f, macc = 0.0f;
      for (int64_t g = 0; g < G; g++) {
        const uint8_t *grp = qw + (t * G + g) * Q4_1_GROUP_BYTES, *w = grp + c * 4;
        int32_t isum = 0;
        for (int j = 0; j < 4; j++)
          for (int b = 0; b < 4; b++) {
            const uint8_t byte = w[j * 64 + b];
            isum += (int32_t)(byte & 0x0F) * q[g * QK + 8 * j + b] + (int32_t)(byte >> 4) * q[g * QK + 8 * j + 4 + b];
          }
        uint16_t sc, mn;
        memcpy(&sc, grp + Q4_1_SCALES + 2 * c, sizeof sc);
        memcpy(&mn, grp + Q4_1_MINS + 2 * c, sizeof mn);
        acc += half_to_float(sc) * dx[g] * (float)isum;
        macc += half_to_float(mn) * sx[g];
      }
      float out = acc + macc;
      if (res) out += res[r * ystride + n];
      y[r * ystride + n] = out;
    }
  }
}

static void q8_0_scalar(const int8_t *act, int64_t astride, int64_t rows, const int8_t *qw, int64_t K, int64_t n0,
                        int64_t n1, float *y, const float *res, int64_t ystride) {
  const int64_t G = K / QK;
  for (int64_t n = n0; n < n1; n++) {
    const int64_t t = n / TILE, c = n % TILE;
    for (int64_t r = 0; r < rows; r++) {
      const int8_t *q = act + r * astride;
      const float *dx = (const float *)(q + K);
      float acc = 0.0f;
      for (int64_t g = 0; g < G; g++) {
        const int8_t *tile = qw + t * q8_0_tile_bytes(G), *w = tile + q8_0_codes(g) + c * 4;
        int32_t isum = 0;
        for (int j = 0; j < 8; j++)
          for (int b = 0; b < 4; b++) isum += (int32_t)w[j * 64 + b] * q[g * QK + 4 * j + b];
        uint16_t sc;
        memcpy(&sc, tile + q8_0_scales(g) + 2 * c, sizeof sc);
        acc += half_to_float(sc) * dx[g] * (float)isum;
      }
      float out = acc;
      if (res) out += res[r * ystride + n];
      y[r * ystride + n] = out;
    }
  }
}

/* ---------------------------------------------------------------------------------------------------
 * AVX-512 VNNI implementation. */

#ifdef SPINDLE_X86
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c,fma")))
#define AVX512_INLINE AVX512 __attribute__((always_inline)) static inline

static inline int32_t load4(const int8_t *p) {
  int32_t v;
  memcpy(&v, p, sizeof v);
  return v;
}

/* The finished tile of one row: y = acc (+ res), the columns of `cols` only. */
AVX512_INLINE void store_tile(float *y, const float *res, __m512 acc, __mmask16 cols) {
  if (res) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(cols, res));
  _mm512_mask_storeu_ps(y, cols, acc);
}

/* Several rows make a pass compute-bound: it consumes its stream slowly, and the hardware prefetcher alone
 * leaves each group's loads waiting on memory (8 rows ran at 0.6-0.85 of the speed with the prefetch below).
 * From PREFETCH_ROWS rows on, a pass prefetches the same place in the next tile into L2; one row prefetches
 * along its own stream instead (blocks.h, prefetch_one_row). */
#define PREFETCH_ROWS 2
#define PREFETCH_NEXT(p, next, j) _mm_prefetch((const char *)(p) + (next) + 64 * (j), _MM_HINT_T1)

/* One tile for NR rows. w: the tile's first group; next: bytes to the next tile; y, res: the tile's first
 * column of the first row. The tile is read front to back once. */
AVX512_INLINE void q4_1_tile(const int8_t *act, int64_t astride, int NR, const uint8_t *w, int64_t next, int64_t K,
                             float *y, const float *res, int64_t ystride, __mmask16 cols) {
  const int64_t G = K / QK;
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  __m512 acc[8], macc[8];
  for (int r = 0; r < NR; r++) acc[r] = macc[r] = _mm512_setzero_ps();
  const int mode = NR == 1 ? one_row_prefetch() : PREFETCH_NONE;
  for (int64_t g = 0; g < G; g++) {
    const uint8_t *wg = w + g * Q4_1_GROUP_BYTES;
    if (NR == 1) prefetch_one_row(mode, wg, Q4_1_GROUP_BYTES);
    if (NR >= PREFETCH_ROWS)
      for (int j = 0; j < Q4_1_GROUP_BYTES / 64; j++) PREFETCH_NEXT(wg, next, j);
    /* lo: the low nibbles; hi16: the high nibbles left in place, i.e. 16 x their codes (at most 240, still
     * an unsigned byte), so that one AND takes them out instead of a shift and an AND; their dot is 16 x
     * theirs, exactly (at most 4 x 4 x 240 x 127 per lane), and an arithmetic shift by 4 undoes it. The
     * batch-1 pass is bound by the vector units as much as by memory on these cores (one thread from L2:
     * ~56 -> ~59 GB/s; batch-1 decode steps 1.019x, bench/decode_ab.py --in-process, 80 rounds). */
    __m512i lo[4], hi16[4];
    for (int j = 0; j < 4; j++) {
      const __m512i v = _mm512_loadu_si512((const void *)(wg + 64 * j));
      lo[j] = _mm512_and_si512(v, m4);
      hi16[j] = _mm512_andnot_si512(m4, v);
    }
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(wg + Q4_1_SCALES)));
    const __m512 mw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(wg + Q4_1_MINS)));
    for (int r = 0; r < NR; r++) {
      const int8_t *q = act + r * astride + g * QK;
      const float *dx = (const float *)(act + r * astride + K);
      __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
      for (int j = 0; j < 4; j++) {
        s0 = _mm512_dpbusd_epi32(s0, lo[j], _mm512_set1_epi32(load4(q + 8 * j)));
        s1 = _mm512_dpbusd_epi32(s1, hi16[j], _mm512_set1_epi32(load4(q + 8 * j + 4)));
      }
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s0, _mm512_srai_epi32(s1, 4))),
                               _mm512_mul_ps(dw, _mm512_set1_ps(dx[g])), acc[r]);
      macc[r] = _mm512_fmadd_ps(mw, _mm512_set1_ps(dx[G + g]), macc[r]);
    }
  }
  for (int r = 0; r < NR; r++)
    store_tile(y + r * ystride, res ? res + r * ystride : NULL, _mm512_add_ps(acc[r], macc[r]), cols);
}

/* One q8_0 tile for NR rows (as q4_1_tile). */
AVX512_INLINE void q8_0_tile(const int8_t *act, int64_t astride, int NR, const int8_t *w, int64_t next, int64_t K,
                             float *y, const float *res, int64_t ystride, __mmask16 cols) {
  const int64_t G = K / QK;
  const __m512i bias = _mm512_set1_epi8((char)0x80);
  const __m512 minus128 = _mm512_set1_ps(-128.0f);
  __m512 acc[8], macc[8];
  for (int r = 0; r < NR; r++) acc[r] = macc[r] = _mm512_setzero_ps();
  const int mode = NR == 1 ? one_row_prefetch() : PREFETCH_NONE;
  for (int64_t g = 0; g < G; g++) {
    const int8_t *wg = w + q8_0_codes(g);
    /* the stream's part for group g: the pair's first codes, or its second codes and the pair's scales */
    if (NR == 1) prefetch_one_row(mode, wg, g % 2 ? 576 : 512);
    if (NR >= PREFETCH_ROWS) {
      for (int j = 0; j < 8; j++) PREFETCH_NEXT(wg, next, j);
      if (g % 2 == 0) PREFETCH_NEXT(w + q8_0_scales(g), next, 0); /* the pair's scales: one line */
    }
    __m512i wu[8];
    for (int j = 0; j < 8; j++) wu[j] = _mm512_xor_si512(_mm512_loadu_si512((const void *)(wg + 64 * j)), bias);
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + q8_0_scales(g))));
    const __m512 off = _mm512_mul_ps(dw, minus128);
    for (int r = 0; r < NR; r++) {
      const int8_t *q = act + r * astride + g * QK;
      const float *dx = (const float *)(act + r * astride + K);
      __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
      for (int j = 0; j < 8; j += 2) {
        s0 = _mm512_dpbusd_epi32(s0, wu[j], _mm512_set1_epi32(load4(q + 4 * j)));
        s1 = _mm512_dpbusd_epi32(s1, wu[j + 1], _mm512_set1_epi32(load4(q + 4 * j + 4)));
      }
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)), _mm512_mul_ps(dw, _mm512_set1_ps(dx[g])),
                               acc[r]);
      macc[r] = _mm512_fmadd_ps(off, _mm512_set1_ps(dx[G + g]), macc[r]);
    }
  }
  for (int r = 0; r < NR; r++)
    store_tile(y + r * ystride, res ? res + r * ystride : NULL, _mm512_add_ps(acc[r], macc[r]), cols);
}

/* Tiles [t0, t1) restricted to columns [n0, n1), all rows in blocks of 8: TILE_CALL(NR) runs one tile for
 * NR rows, from the loop's a (rows), w (tile), tile_bytes, yt, rt (output and residual) and c (columns). */
#define TILE_LOOP(TILE_BYTES, TILE_CALL)                                                        \
  const int64_t tile_bytes = (TILE_BYTES);                                                      \
  for (int64_t r0 = 0; r0 < rows; r0 += 8) {                                                    \
    const int64_t nr = rows - r0 < 8 ? rows - r0 : 8;                                           \
    const int8_t *a = act + r0 * astride;                                                       \
    for (int64_t t = t0; t < t1; t++) {                                                         \
      const __mmask16 c = (__mmask16)tile_columns(t, n0, n1);                                   \
      const void *w = (const char *)qw + t * tile_bytes;                                        \
      float *yt = y + r0 * ystride + t * TILE;                                                  \
      const float *rt = res ? res + r0 * ystride + t * TILE : NULL;                             \
      switch (nr) {                                                                             \
        case 1: TILE_CALL(1); break;                                                            \
        case 2: TILE_CALL(2); break;                                                            \
        case 3: TILE_CALL(3); break;                                                            \
        case 4: TILE_CALL(4); break;                                                            \
        case 5: TILE_CALL(5); break;                                                            \
        case 6: TILE_CALL(6); break;                                                            \
        case 7: TILE_CALL(7); break;                                                            \
        default: TILE_CALL(8); break;                                                           \
      }                                                                                         \
    }                                                                                           \
  }

AVX512 static void q4_1_avx512(const int8_t *act, int64_t astride, int64_t rows, const uint8_t *qw, int64_t K,
                               int64_t n0, int64_t n1, float *y, const float *res, int64_t ystride) {
  const int64_t G = K / QK, t0 = n0 / TILE, t1 = (n1 + TILE - 1) / TILE;
#define Q4_1_CALL(NR) q4_1_tile(a, astride, NR, (const uint8_t *)w, tile_bytes, K, yt, rt, ystride, c)
  TILE_LOOP(G * Q4_1_GROUP_BYTES, Q4_1_CALL)
#undef Q4_1_CALL
}

AVX512 static void q8_0_avx512(const int8_t *act, int64_t astride, int64_t rows, const int8_t *qw, int64_t K,
                               int64_t n0, int64_t n1, float *y, const float *res, int64_t ystride) {
  const int64_t G = K / QK, t0 = n0 / TILE, t1 = (n1 + TILE - 1) / TILE;
#define Q8_0_CALL(NR) q8_0_tile(a, astride, NR, (const int8_t *)w, tile_bytes, K, yt, rt, ystride, c)
  TILE_LOOP(q8_0_tile_bytes(G), Q8_0_CALL)
#undef Q8_0_CALL
}
#endif /* SPINDLE_X86 */

/* ---------------------------------------------------------------------------------------------------
 * Run-time dispatch. */

enum { ISA_UNKNOWN = -1, ISA_SCALAR = 0, ISA_AVX512_VNNI = 1 };
static volatile int spindle_isa = ISA_UNKNOWN;

/* 1 when this CPU runs the AVX-512 VNNI kernels (whatever SPINDLE_QKERNEL says), else 0. */
int32_t spindle_qkernel_vector_supported(void) {
#ifdef SPINDLE_X86
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vnni");
#else
  return 0;
#endif
}

/* The implementation the tile kernels use: 0 = portable C, 1 = AVX-512 VNNI. */
int32_t spindle_qkernel_isa(void) {
  int isa = spindle_isa;
  if (isa != ISA_UNKNOWN) return isa;
  isa = ISA_SCALAR;
  const char *force = getenv("SPINDLE_QKERNEL");
#ifdef SPINDLE_X86
  if (!(force && strcmp(force, "scalar") == 0) && spindle_qkernel_vector_supported()) isa = ISA_AVX512_VNNI;
#else
  (void)force;
#endif
  spindle_isa = isa;
  return isa;
}

static int use_vector_kernels(void) { return spindle_qkernel_isa() == ISA_AVX512_VNNI; }

/* The software prefetches this copy of the kernels makes (blocks.h), fixed at the first call: the one-row
 * mode (0 none, 1 page, 2 rolling) plus 4 when the blocks ask for the next matmul's head. */
int32_t spindle_qkernel_prefetch(void) { return one_row_prefetch() | (head_prefetch() << 2); }

/* y[r, n] (+ res[r, n] when res is not NULL) for r < rows, n0 <= n < n1 (columns of the tiled weight);
 * act rows are astride bytes apart, y and res rows ystride floats apart. */
int32_t spindle_qmm_q4_1(const int8_t *act, int64_t astride, int64_t rows, const uint32_t *qweight, int64_t K,
                         int64_t n0, int64_t n1, float *y, const float *res, int64_t ystride) {
  const uint8_t *qw = (const uint8_t *)qweight;
#ifdef SPINDLE_X86
  if (spindle_qkernel_isa() == ISA_AVX512_VNNI) {
    q4_1_avx512(act, astride, rows, qw, K, n0, n1, y, res, ystride);
    return 0;
  }
#endif
  q4_1_scalar(act, astride, rows, qw, K, n0, n1, y, res, ystride);
  return 0;
}

int32_t spindle_qmm_q8_0(const int8_t *act, int64_t astride, int64_t rows, const int8_t *qweight, int64_t K,
                         int64_t n0, int64_t n1, float *y, const float *res, int64_t ystride) {
#ifdef SPINDLE_X86
  if (spindle_qkernel_isa() == ISA_AVX512_VNNI) {
    q8_0_avx512(act, astride, rows, qweight, K, n0, n1, y, res, ystride);
    return 0;
  }
#endif
  q8_0_scalar(act, astride, rows, qweight, K, n0, n1, y, res, ystride);
  return 0;
}

/* Guided self-scheduling over `tiles` tiles: the next range [*t0, *t1) for the calling thread, or 0 when
 * none is left. Ranges are a quarter of what is left, at least two tiles (the pair the one- and two-row
 * kernels take at once). */
static int take_tiles(int32_t *counter, int64_t tiles, int64_t *t0, int64_t *t1) {
  int32_t cur = __atomic_load_n(counter, __ATOMIC_RELAXED);
  for (;;) {
    const int64_t left = tiles - cur;
    if (left <= 0) return 0;
    int64_t n = left / 4 > 2 ? left / 4 : 2;
    if (n > left) n = left;
    if (__atomic_compare_exchange_n(counter, &cur, (int32_t)(cur + n), 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
      *t0 = cur;
      *t1 = cur + n;
      return 1;
    }
  }
}

/* ---------------------------------------------------------------------------------------------------
 * Fused decode blocks of the int8 kernels (the phases, their sync words and the scheduling of their units
 * are blocks.h's):
 *
 *   spindle_qblock_norm_matmul:  y = rmsnorm(x) @ W.T                         (input norm + fused QKV,
 *                                                                              final norm + output head)
 *   spindle_qblock_mlp:          x2 = x + a @ Wo.T                             (o_proj + residual)
 *                                y  = x2 + swiglu(rmsnorm(x2) @ Wgu.T) @ Wd.T  (norm, gate_up, down)
 */

static int32_t qmm_columns(int32_t fmt, const int8_t *act, int64_t astride, int64_t rows, const void *qweight,
                           int64_t K, int64_t n0, int64_t n1, float *y, const float *res, int64_t ystride) {
  if (fmt == 1)
    return spindle_qmm_q4_1(act, astride, rows, (const uint32_t *)qweight, K, n0, n1, y, res, ystride);
  return spindle_qmm_q8_0(act, astride, rows, (const int8_t *)qweight, K, n0, n1, y, res, ystride);
}

/* The parallel entry of one matmul (fmt: 0 = q8_0, 1 = q4_1): every thread of the parallel region calls it
 * with the same zeroed *counter; together they compute all N columns. */
int32_t spindle_qmm_sched(int32_t *counter, int32_t fmt, const int8_t *act, int64_t astride, int64_t rows,
                          const void *qweight, int64_t K, int64_t N, float *y, const float *res) {
  int64_t t0, t1;
  while (take_tiles(counter, (N + TILE - 1) / TILE, &t0, &t1))
    qmm_columns(fmt, act, astride, rows, qweight, K, t0 * TILE, t1 * TILE < N ? t1 * TILE : N, y, res, N);
  return 0;
}

/* Quantize groups [g0, g1) of one row of K values, each value times scale * w (w NULL: the values as they
 * are), into the row `dst` of the activation layout of spindle_qact_quantize. */
static void quantize_groups(const float *x, const float *w, float scale, int64_t K, int64_t g0, int64_t g1,
                            int8_t *dst) {
  const int64_t G = K / QK;
  float *dx = (float *)(dst + K), *sx = dx + G;
  const int vector = use_vector_kernels();
  for (int64_t g = g0; g < g1; g++) {
    float v[QK];
    const float *xg = x + g * QK;
    if (w) {
#ifdef SPINDLE_X86
      if (vector)
        scale_group_avx512(xg, w + g * QK, scale, v);
      else
#endif
        for (int i = 0; i < QK; i++) v[i] = xg[i] * scale * w[g * QK + i];
      xg = v;
    }
    int8_t q[QK];
    float d;
#ifdef SPINDLE_X86
    const int32_t sum = vector ? quantize_group_avx512(xg, q, &d) : quantize_group_scalar(xg, q, &d);
#else
    (void)vector;
    const int32_t sum = quantize_group_scalar(xg, q, &d);
#endif
    dx[g] = d;
    sx[g] = d * (float)sum;
    memcpy(dst + g * QK, q, QK);
  }
}

/* Quantize one row of K values scaled by rsqrt(mean(x^2) + eps) * w (w NULL: x as it is). The vector path
 * sums the squares in 32 lanes (and quantize_groups scales each group in vector registers): an input norm
 * is on every block's way to its matmul, and the portable loop's chain of 576 dependent adds took ~0.8 us
 * of a thread's ~0.9 us for a 576-wide row (the vector path ~0.2 us), time in which the thread streams no
 * weights. The two paths add the squares in different orders, so their normed rows may differ by a
 * rounding. */
static void quantize_row(const float *x, const float *w, float eps, int64_t K, int8_t *dst) {
  float scale = 1.0f;
  if (w) {
    float ss = 0.0f;
#ifdef SPINDLE_X86
    if (use_vector_kernels())
      ss = sum_squares_avx512(x, K);
    else
#endif
      for (int64_t i = 0; i < K; i++) ss += x[i] * x[i];
    scale = 1.0f / sqrtf(ss / (float)K + eps);
  }
  quantize_groups(x, w, scale, K, 0, K / QK, dst);
}

static next_matmul matmul_ahead(int32_t fmt, const void *qweight, int64_t K, int64_t tiles, int32_t odd) {
  next_matmul m = {qweight, fmt == 1 ? K / QK * Q4_1_GROUP_BYTES : q8_0_tile_bytes(K / QK), tiles, odd};
  return m;
}

/* Phase: quantize `rows` rows of x (row stride K floats) into act (row stride spindle_qact_row_bytes(K)). */
static void phase_quantize(int32_t *sync, int32_t half, int64_t rows, const float *x, const float *w, float eps,
                           int64_t K, int8_t *act, const next_matmul *ahead) {
  const int64_t astride = spindle_qact_row_bytes(K);
  int64_t r;
  prefetch_head(ahead, half, 0);
  while ((r = take_unit(sync, rows)) >= 0) {
    quantize_row(x + r * K, w, eps, K, act + r * astride);
    finish_units(sync, half, 1);
  }
  wait_phase(sync, rows);
}

/* The activations for the next matmul: a single row that fits is quantized by every caller on its own,
 * into `local` (a BLOCK_LOCAL_BYTES stack buffer: K up to ~26000); more rows are one shared phase
 * (phase_quantize) into `shared`. Returns the buffer the matmul reads. Each of two threads quantizing a
 * 1536-wide row itself took ~0.4 us, against ~2.3 us for one thread quantizing it while the other waited
 * and then read it from the first one's cache, when the two threads ran on cores that share no cache. */
static const int8_t *quantize_for(int32_t *sync, int32_t half, int64_t rows, const float *x, const float *w,
                                  float eps, int64_t K, int8_t *shared, int8_t *local, const next_matmul *ahead) {
  if (rows == 1 && spindle_qact_row_bytes(K) <= BLOCK_LOCAL_BYTES) {
    prefetch_head(ahead, half, 0);
    quantize_row(x, w, eps, K, local);
    return local;
  }
  phase_quantize(sync, half, rows, x, w, eps, K, shared, ahead);
  return shared;
}

/* Phase: y[:, n] (+ res) for all N columns; the matrix is `odd` (see next_matmul). A block's last phase asks
 * for the head of the matmul the next VM call starts with (`next`, NULL if none) before it waits. */
static void phase_matmul(int32_t *sync, int32_t half, int32_t fmt, const int8_t *act, int64_t K, int64_t rows,
                         const void *qweight, int32_t odd, int64_t N, float *y, const float *res,
                         const next_matmul *next) {
  const int64_t tiles = (N + TILE - 1) / TILE, astride = spindle_qact_row_bytes(K);
  const int32_t own = half ^ odd;
  int64_t t0, t1;
  while (take_split(sync, tiles, own, OWN_CHUNK, 2, &t0, &t1)) {
    qmm_columns(fmt, act, astride, rows, qweight, K, t0 * TILE, t1 * TILE < N ? t1 * TILE : N, y,
                res, N);
    finish_units(sync, own, t1 - t0);
  }
  prefetch_head(next, half, 1);
  wait_phase(sync, tiles);
}

#ifdef SPINDLE_X86
/* h[c] = silu(g[c]) * u[c] for c < n, n a multiple of 16. */
AVX512 static void swiglu_avx512(const float *g, const float *u, float *h, int64_t n) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t c = 0; c < n; c += 16) {
    const __m512 gv = _mm512_loadu_ps(g + c);
    const __m512 e = exp_avx512(_mm512_sub_ps(_mm512_setzero_ps(), gv));
    _mm512_storeu_ps(h + c, _mm512_mul_ps(_mm512_div_ps(gv, _mm512_add_ps(one, e)), _mm512_loadu_ps(u + c)));
  }
}
#endif

static void swiglu_row(const float *g, const float *u, float *h, int64_t n) {
#ifdef SPINDLE_X86
  if (use_vector_kernels()) {
    swiglu_avx512(g, u, h, n);
    return;
  }
#endif
  for (int64_t c = 0; c < n; c++) h[c] = g[c] / (1.0f + expf(-g[c])) * u[c];
}

/* h[c] = silu(g[c]) * u[c] for c < n (n a multiple of 16), as the MLP block computes it (for tests). */
int32_t spindle_swiglu(const float *g, const float *u, float *h, int64_t n) {
  swiglu_row(g, u, h, n);
  return 0;
}

/* Phase: gate and up columns of the same groups of 32 columns, h = silu(gate) * up for those columns, and
 * h quantized for the down projection (act_h: rows x spindle_qact_row_bytes(I)) group by group as each is
 * done, so that no separate quantize phase (and wait) comes between this matmul and the next. The matrix
 * has its gate and up tiles interleaved (gate tile 0, up tile 0, gate tile 1, ...; quantization.py,
 * `interleave_gate_up`), so a group is four consecutive tiles and a thread's groups one stream; gu is
 * [rows, 2I] in that column order, h is [rows, I]; I is a multiple of 32. A thread out of groups asks for
 * the head of the down projection (`ahead`) before it waits. */
static void phase_gate_up(int32_t *sync, int32_t half, int32_t fmt, const int8_t *act, int64_t K, int64_t rows,
                          const void *qweight, int64_t I, float *gu, float *h, int8_t *act_h,
                          const next_matmul *ahead) {
  const int64_t groups = I / QK, astride = spindle_qact_row_bytes(K), hstride = spindle_qact_row_bytes(I);
  int64_t g0, g1;
  while (take_split(sync, groups, half, OWN_CHUNK * TILE / QK, 2 * TILE / QK, &g0, &g1)) {
    const int64_t n0 = g0 * QK, n1 = g1 * QK;
    qmm_columns(fmt, act, astride, rows, qweight, K, 2 * n0, 2 * n1, gu, NULL, 2 * I);
    for (int64_t r = 0; r < rows; r++) {
      const float *g = gu + r * 2 * I + 2 * n0;
      for (int64_t c = n0; c < n1; c += TILE, g += 2 * TILE) swiglu_row(g, g + TILE, h + r * I + c, TILE);
      quantize_groups(h + r * I, NULL, 1.0f, I, g0, g1, act_h + r * hstride);
    }
    finish_units(sync, half, g1 - g0);
  }
  prefetch_head(ahead, half, 0);
  wait_phase(sync, groups);
}

/* The two phases of y = rmsnorm(x) @ W.T (sync + 0 and + PHASE_WORDS): the activations (quantize_for),
 * then the matmul; m is W's next_matmul, next the matrix whose head the threads ask for as they finish. */
static void norm_matmul_phases(int32_t *sync, int32_t half, int64_t rows, const float *x, const float *w, float eps,
                               int64_t K, int8_t *act, int8_t *local, int32_t fmt, const void *qweight,
                               const next_matmul *m, int64_t N, float *y, const next_matmul *next) {
  const int8_t *xq = quantize_for(sync, half, rows, x, w, eps, K, act, local, m);
  phase_matmul(sync + PHASE_WORDS, half, fmt, xq, K, rows, qweight, m->odd, N, y, NULL, next);
}

/* y[rows, N] = rmsnorm(x[rows, K]; w, eps) @ W.T. sync: 2 phases x PHASE_WORDS + SYNC_SLACK_WORDS int32,
 * zeroed; half: 0 or 1, the half of the parallel loop's iterations the call is in; act: rows x
 * spindle_qact_row_bytes(K) bytes of scratch. A matrix is (fmt, qweight): its tiles hold the scales.
 * (next_fmt, next_q, next_k, next_n): the matrix (next_k inputs, next_n outputs) the next VM call starts
 * with, whose head each thread asks for when it runs out of tiles; next_fmt -1: none. */
int32_t spindle_qblock_norm_matmul(int32_t *sync, int32_t half, int64_t rows, const float *x, const float *w, float eps,
                                   int64_t K, int8_t *act, int32_t fmt, const void *qweight, int64_t N, float *y,
                                   int32_t next_fmt, const void *next_q, int64_t next_k, int64_t next_n) {
  sync = sync_lines(sync);
  if (phase_done(sync + PHASE_WORDS, (N + TILE - 1) / TILE)) return 0;
  /* the QKV (or the output head) is even, the o_proj after the attention odd (next_matmul) */
  const next_matmul m = matmul_ahead(fmt, qweight, K, (N + TILE - 1) / TILE, 0),
                    next = matmul_ahead(next_fmt, next_q, next_k, (next_n + TILE - 1) / TILE, 1);
  int8_t local[BLOCK_LOCAL_BYTES] __attribute__((aligned(64)));
  norm_matmul_phases(sync, half, rows, x, w, eps, K, act, local, fmt, qweight, &m, N, y,
                     next_fmt >= 0 ? &next : NULL);
  return 0;
}

/* The layer after its attention (see above), and optionally ("linked") what the next VM call would
 * start with, in the same parallel region: the next layer's input norm and QKV matmul, or the final norm
 * and the output head, z = rmsnorm(y; norm2_w, eps2) @ W2.T. Linking saves a VM call and a thread-pool
 * launch per layer; the down phase's wait is the one the norm needs anyway.
 *
 * a [rows, A] (attention output), x and y [rows, H]; gate_up has 2I output columns (gate and up tiles
 * interleaved), I a multiple of 32; sync: 7 phases x PHASE_WORDS + SYNC_SLACK_WORDS int32 (5 unlinked),
 * zeroed; half as above. Scratch: act_a rows x row_bytes(A), act_n and act_2 rows x row_bytes(H),
 * act_h rows x row_bytes(I) bytes; x2 [rows, H], gu [rows, 2I], h [rows, I] floats. The link: (f2, q2,
 * N2) the matrix (H inputs), z [rows, N2]; f2 -1: none (norm2_w, q2, act_2 and z are not read). next_*
 * as for spindle_qblock_norm_matmul: the matrix of the VM call after this one (unlinked: the next layer's
 * QKV or the output head; linked: the next layer's o_proj, or none). */
int32_t spindle_qblock_mlp(int32_t *sync, int32_t half, int64_t rows, const float *a, int64_t A, const float *x,
                           int64_t H, int64_t I, int32_t fo, const void *qo, const float *norm_w, float eps,
                           int32_t fg, const void *qg, int32_t fd, const void *qd, int8_t *act_a, int8_t *act_n,
                           int8_t *act_h, float *x2, float *gu, float *h, float *y, const float *norm2_w,
                           float eps2, int32_t f2, const void *q2, int64_t N2, int8_t *act_2, float *z,
                           int32_t next_fmt, const void *next_q, int64_t next_k, int64_t next_n) {
  sync = sync_lines(sync);
  const int linked = f2 >= 0;
  if (linked ? phase_done(sync + 6 * PHASE_WORDS, (N2 + TILE - 1) / TILE)
             : phase_done(sync + 4 * PHASE_WORDS, (H + TILE - 1) / TILE))
    return 0;
  /* o_proj and down odd, gate_up and the linked QKV (or head) even (next_matmul); the next VM call starts
   * with the next layer's o_proj when linked, else with its QKV or the output head */
  const next_matmul mo = matmul_ahead(fo, qo, A, (H + TILE - 1) / TILE, 1),
                    mg = matmul_ahead(fg, qg, H, 2 * I / TILE, 0),
                    md = matmul_ahead(fd, qd, I, (H + TILE - 1) / TILE, 1),
                    m2 = matmul_ahead(f2, q2, H, (N2 + TILE - 1) / TILE, 0),
                    next = matmul_ahead(next_fmt, next_q, next_k, (next_n + TILE - 1) / TILE, linked);
  const next_matmul *after_down = linked ? &m2 : next_fmt >= 0 ? &next : NULL;
  int8_t local[BLOCK_LOCAL_BYTES] __attribute__((aligned(64))); /* a's row, x2's normed row, y's */
  const int8_t *aq = quantize_for(sync, half, rows, a, NULL, 0.0f, A, act_a, local, &mo);
  phase_matmul(sync + PHASE_WORDS, half, fo, aq, A, rows, qo, mo.odd, H, x2, x, NULL);
  const int8_t *nq = quantize_for(sync + 2 * PHASE_WORDS, half, rows, x2, norm_w, eps, H, act_n, local, &mg);
  phase_gate_up(sync + 3 * PHASE_WORDS, half, fg, nq, H, rows, qg, I, gu, h, act_h, &md);
  phase_matmul(sync + 4 * PHASE_WORDS, half, fd, act_h, I, rows, qd, md.odd, H, y, x2, after_down);
  if (linked)
    norm_matmul_phases(sync + 5 * PHASE_WORDS, half, rows, y, norm2_w, eps2, H, act_2, local, f2, q2, &m2, N2, z,
                       next_fmt >= 0 ? &next : NULL);
  return 0;
}
