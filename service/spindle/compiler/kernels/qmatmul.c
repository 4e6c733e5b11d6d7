/* Integer-dot kernels for matmuls by GGUF block-quantized weights (q4_1, q8_0) on the CPU.
 *
 * Activations are quantized per row to int8 in groups of 32 (spindle_qact_quantize), once per matmul
 * call; the weights stay the stored GGUF blocks (spindle/compiler/quantization.py, device layout). A
 * tile kernel (spindle_qmm_q4_1 / spindle_qmm_q8_0) computes y[r, n] for all rows r and one range of
 * output columns n, rows blocked by 4 so that each weight chunk is decoded once per 4 rows:
 *
 *   q4_1: y = sum_g dw[g] * dx[g] * dot(code_w, q_x)[g] + sum_g mw[g] * sx[g]
 *   q8_0: y = sum_g dw[g] * dx[g] * dot(w, q_x)[g]
 *
 * plus res[r, n] when a residual is given: each task adds it to the tile it has just stored, while the tile
 * is in cache (one float add of the finished sum, the value a separate elementwise add would give; the
 * micro-kernels stay as they are). Here dx[g] = max|x_g| / 127, q_x = rint(x / dx), sx[g] = dx[g] * sum(q_x)[g]. The dots are exact
 * integer sums; the float part is one multiply-add per group. Two implementations, picked at run time:
 * AVX-512 VNNI (vpdpbusd: u8 x s8 -> s32) and portable C. SPINDLE_QKERNEL=scalar forces the portable one.
 *
 * Activation scratch layout, one row of spindle_qact_row_bytes(K) bytes per activation row:
 *   [0, K)             int8 q_x; q4_1 stores each chunk of 128 weights (the last may be shorter, w wide)
 *                      as its w/2 even-indexed values, then its w/2 odd-indexed ones, matching the low and
 *                      high nibbles of the packed weight bytes; q8_0 stores them in order
 *   [K, K + 4G)        float dx[G]
 *   [K + 4G, K + 8G)   float sx[G]
 *
 * vpdpbusd multiplies unsigned by signed bytes: the q8_0 path feeds it the weights as w + 128 (xor 0x80)
 * and takes 128 * sum(q_x) back out per group as a float term, sum_g (-128 dw[g]) * sx[g], like q4_1's
 * minimum term (the integer dots are exact, the float rounding stays ~1e-7 of the group's terms).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SPINDLE_X86 1
#include <immintrin.h>
#endif

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
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"))) static int32_t quantize_group_avx512(
    const float *xg, int8_t *q, float *d) {
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
#endif

static int use_vector_kernels(void);

/* fmt: 0 = q8_0 order, 1 = q4_1 order (evens / odds per chunk of 128). */
int32_t spindle_qact_quantize(const float *x, int64_t K, int8_t *dst, int32_t fmt) {
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
    const int64_t k0 = g * QK;
    if (fmt == 1) {
      const int64_t c0 = k0 / 128 * 128, w = K - c0 < 128 ? K - c0 : 128;
      for (int i = 0; i < QK; i++) {
        const int64_t kl = k0 - c0 + i;
        dst[c0 + (kl & 1) * (w / 2) + kl / 2] = q[i];
      }
    } else {
      memcpy(dst + k0, q, QK);
    }
  }
  return 0;
}

/* ---------------------------------------------------------------------------------------------------
 * Portable implementation. */

static void q4_1_scalar(const int8_t *act, int64_t astride, int64_t rows, const uint8_t *qw,
                        const uint16_t *sc, const uint16_t *mn, int64_t K, int64_t n0, int64_t n1, float *y,
                        int64_t ystride) {
  const int64_t G = K / QK;
  for (int64_t r = 0; r < rows; r++) {
    const int8_t *q = act + r * astride;
    const float *dx = (const float *)(q + K), *sx = dx + G;
    for (int64_t n = n0; n < n1; n++) {
      const uint8_t *w = qw + n * (K / 2);
      float acc = 0.0f, macc = 0.0f;
      for (int64_t g = 0; g < G; g++) {
        const int64_t k0 = g * QK, c0 = k0 / 128 * 128, half = (K - c0 < 128 ? K - c0 : 128) / 2;
        int32_t isum = 0;
        for (int64_t b = k0 / 2; b < k0 / 2 + QK / 2; b++) { /* byte b: weight 2b low, 2b + 1 high */
          const int64_t pos = c0 + (b - c0 / 2);
          isum += (int32_t)(w[b] & 0x0F) * q[pos] + (int32_t)(w[b] >> 4) * q[pos + half];
        }
        acc += half_to_float(sc[n * G + g]) * dx[g] * (float)isum;
        macc += half_to_float(mn[n * G + g]) * sx[g];
      }
      y[r * ystride + n] = acc + macc;
    }
  }
}

static void q8_0_scalar(const int8_t *act, int64_t astride, int64_t rows, const int8_t *qw, const uint16_t *sc,
                        int64_t K, int64_t n0, int64_t n1, float *y, int64_t ystride) {
  const int64_t G = K / QK;
  for (int64_t r = 0; r < rows; r++) {
    const int8_t *q = act + r * astride;
    const float *dx = (const float *)(q + K);
    for (int64_t n = n0; n < n1; n++) {
      const int8_t *w = qw + n * K;
      float acc = 0.0f;
      for (int64_t g = 0; g < G; g++) {
        int32_t isum = 0;
        for (int64_t k = g * QK; k < (g + 1) * QK; k++) isum += (int32_t)w[k] * q[k];
        acc += half_to_float(sc[n * G + g]) * dx[g] * (float)isum;
      }
      y[r * ystride + n] = acc;
    }
  }
}

/* ---------------------------------------------------------------------------------------------------
 * AVX-512 VNNI implementation. */

#ifdef SPINDLE_X86
#ifndef PREFETCH_BYTES
#define PREFETCH_BYTES 4096 /* software prefetch distance in the weight stream (the rows are contiguous) */
#endif
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c,fma")))
#define AVX512_INLINE AVX512 __attribute__((always_inline)) static inline

/* NC (1..2) adjacent output columns for NR (1..4) activation rows: the activation loads are shared by the
 * columns, the decoded weights by the rows. */
AVX512_INLINE void q4_1_cols(const int8_t *act, int64_t astride, int NR, int NC, const uint8_t *w,
                             const uint16_t *s, const uint16_t *m, int64_t K, float *y, int64_t ystride) {
  const int64_t G = K / QK;
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  const __m512i lane_group = _mm512_srli_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), 2);
  __m512 acc[4][2];
  for (int j = 0; j < NR; j++)
    for (int i = 0; i < NC; i++) acc[j][i] = _mm512_setzero_ps();
  for (int64_t g16 = 0; g16 < G; g16 += 16) {
    const int64_t gm = G - g16 < 16 ? G - g16 : 16;
    const __mmask16 gmask = (__mmask16)((1u << gm) - 1);
    __m512 scale[4][2];
    for (int i = 0; i < NC; i++) {
      const __m512 dw = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(gmask, s + i * G + g16));
      const __m512 mw = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(gmask, m + i * G + g16));
      for (int j = 0; j < NR; j++) {
        const float *dx = (const float *)(act + j * astride + K);
        scale[j][i] = _mm512_mul_ps(dw, _mm512_maskz_loadu_ps(gmask, dx + g16));
        acc[j][i] = _mm512_fmadd_ps(mw, _mm512_maskz_loadu_ps(gmask, dx + G + g16), acc[j][i]);  /* min term */
      }
    }
    for (int c = 0; c < 4; c++) {
      const int64_t k0 = g16 * QK + 128 * c;
      if (k0 >= K) break;
      const int64_t half = (K - k0 < 128 ? K - k0 : 128) / 2;
      const __mmask64 bmask = half == 64 ? ~(__mmask64)0 : (((__mmask64)1 << half) - 1);
      __m512i lo[2], hi[2];
      for (int i = 0; i < NC; i++) {
        const uint8_t *wi = w + i * (K / 2) + k0 / 2;
        _mm_prefetch((const char *)wi + PREFETCH_BYTES, _MM_HINT_T0);
        const __m512i bytes = _mm512_maskz_loadu_epi8(bmask, wi);
        lo[i] = _mm512_and_si512(bytes, m4);
        hi[i] = _mm512_and_si512(_mm512_srli_epi16(bytes, 4), m4);
      }
      const __m512i idx = _mm512_add_epi32(lane_group, _mm512_set1_epi32(4 * c));
      for (int j = 0; j < NR; j++) {
        const int8_t *q = act + j * astride + k0;
        const __m512i qe = _mm512_maskz_loadu_epi8(bmask, q), qo = _mm512_maskz_loadu_epi8(bmask, q + half);
        for (int i = 0; i < NC; i++) {
          const __m512i dot = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), lo[i], qe), hi[i], qo);
          acc[j][i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_permutexvar_ps(idx, scale[j][i]), acc[j][i]);
        }
      }
    }
  }
  for (int j = 0; j < NR; j++)
    for (int i = 0; i < NC; i++) y[j * ystride + i] = _mm512_reduce_add_ps(acc[j][i]);
}

AVX512_INLINE void q8_0_cols(const int8_t *act, int64_t astride, int NR, int NC, const int8_t *w,
                             const uint16_t *s, int64_t K, float *y, int64_t ystride) {
  const int64_t G = K / QK;
  const __m512i bias = _mm512_set1_epi8((char)0x80);
  const __m512i lane_group = _mm512_srli_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), 3);
  __m512 acc[4][2];
  for (int j = 0; j < NR; j++)
    for (int i = 0; i < NC; i++) acc[j][i] = _mm512_setzero_ps();
  for (int64_t g16 = 0; g16 < G; g16 += 16) {
    const int64_t gm = G - g16 < 16 ? G - g16 : 16;
    const __mmask16 gmask = (__mmask16)((1u << gm) - 1);
    __m512 scale[4][2];
    for (int i = 0; i < NC; i++) {
      const __m512 dw = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(gmask, s + i * G + g16));
      const __m512 offset = _mm512_mul_ps(dw, _mm512_set1_ps(-128.0f));
      for (int j = 0; j < NR; j++) {
        const float *dx = (const float *)(act + j * astride + K);
        scale[j][i] = _mm512_mul_ps(dw, _mm512_maskz_loadu_ps(gmask, dx + g16));
        acc[j][i] = _mm512_fmadd_ps(offset, _mm512_maskz_loadu_ps(gmask, dx + G + g16), acc[j][i]);
      }
    }
    for (int c = 0; c < 8; c++) {
      const int64_t k0 = g16 * QK + 64 * c;
      if (k0 >= K) break;
      const int64_t width = K - k0 < 64 ? K - k0 : 64;
      const __mmask64 bmask = width == 64 ? ~(__mmask64)0 : (((__mmask64)1 << width) - 1);
      __m512i wu[2];
      for (int i = 0; i < NC; i++) {
        const int8_t *wi = w + i * K + k0;
        _mm_prefetch((const char *)wi + PREFETCH_BYTES, _MM_HINT_T0);
        wu[i] = _mm512_xor_si512(_mm512_maskz_loadu_epi8(bmask, wi), bias);
      }
      const __m512i idx = _mm512_add_epi32(lane_group, _mm512_set1_epi32(2 * c));
      for (int j = 0; j < NR; j++) {
        const __m512i qx = _mm512_maskz_loadu_epi8(bmask, act + j * astride + k0);
        for (int i = 0; i < NC; i++) {
          const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wu[i], qx);
          acc[j][i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_permutexvar_ps(idx, scale[j][i]), acc[j][i]);
        }
      }
    }
  }
  for (int j = 0; j < NR; j++)
    for (int i = 0; i < NC; i++) y[j * ystride + i] = _mm512_reduce_add_ps(acc[j][i]);
}

/* Rows in blocks of 4; one row streams one column at a time (one sequential weight stream), several rows
 * take two adjacent columns per pass. */
#define ROW_BLOCKS(COL_CALL)                                                                    \
  for (int64_t r0 = 0; r0 < rows; r0 += 4) {                                                    \
    const int64_t nr = rows - r0 < 4 ? rows - r0 : 4;                                           \
    const int8_t *a = act + r0 * astride;                                                       \
    float *yr = y + r0 * ystride;                                                               \
    int64_t n = n0;                                                                             \
    if (nr > 1)                                                                                 \
      for (; n + 1 < n1; n += 2) {                                                              \
        switch (nr) {                                                                           \
          case 2: COL_CALL(2, 2); break;                                                        \
          case 3: COL_CALL(3, 2); break;                                                        \
          default: COL_CALL(4, 2); break;                                                       \
        }                                                                                       \
      }                                                                                         \
    for (; n < n1; n++) {                                                                       \
      switch (nr) {                                                                             \
        case 1: COL_CALL(1, 1); break;                                                          \
        case 2: COL_CALL(2, 1); break;                                                          \
        case 3: COL_CALL(3, 1); break;                                                          \
        default: COL_CALL(4, 1); break;                                                         \
      }                                                                                         \
    }                                                                                           \
  }

AVX512 static void q4_1_avx512(const int8_t *act, int64_t astride, int64_t rows, const uint8_t *qw,
                               const uint16_t *sc, const uint16_t *mn, int64_t K, int64_t n0, int64_t n1,
                               float *y, int64_t ystride) {
  const int64_t G = K / QK;
#define Q4_1_COL(NR, NC) q4_1_cols(a, astride, NR, NC, qw + n * (K / 2), sc + n * G, mn + n * G, K, yr + n, ystride)
  ROW_BLOCKS(Q4_1_COL)
#undef Q4_1_COL
}

AVX512 static void q8_0_avx512(const int8_t *act, int64_t astride, int64_t rows, const int8_t *qw,
                               const uint16_t *sc, int64_t K, int64_t n0, int64_t n1, float *y, int64_t ystride) {
  const int64_t G = K / QK;
#define Q8_0_COL(NR, NC) q8_0_cols(a, astride, NR, NC, qw + n * K, sc + n * G, K, yr + n, ystride)
  ROW_BLOCKS(Q8_0_COL)
#undef Q8_0_COL
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

/* The residual epilogue of a tile: y[r, n] += res[r, n] for r < rows, n0 <= n < n1. */
static void add_residual(float *y, const float *res, int64_t rows, int64_t n0, int64_t n1, int64_t ystride) {
  for (int64_t r = 0; r < rows; r++)
    for (int64_t n = n0; n < n1; n++) y[r * ystride + n] += res[r * ystride + n];
}

/* y[r, n] (+ res[r, n] when res is not NULL) for r < rows, n0 <= n < n1; act rows are astride bytes apart,
 * y and res rows ystride floats apart. */
int32_t spindle_qmm_q4_1(const int8_t *act, int64_t astride, int64_t rows, const uint32_t *qweight,
                         const uint16_t *scales, const uint16_t *mins, int64_t K, int64_t n0, int64_t n1,
                         float *y, const float *res, int64_t ystride) {
  const uint8_t *qw = (const uint8_t *)qweight;
#ifdef SPINDLE_X86
  if (spindle_qkernel_isa() == ISA_AVX512_VNNI)
    q4_1_avx512(act, astride, rows, qw, scales, mins, K, n0, n1, y, ystride);
  else
#endif
    q4_1_scalar(act, astride, rows, qw, scales, mins, K, n0, n1, y, ystride);
  if (res) add_residual(y, res, rows, n0, n1, ystride);
  return 0;
}

int32_t spindle_qmm_q8_0(const int8_t *act, int64_t astride, int64_t rows, const int8_t *qweight,
                         const uint16_t *scales, int64_t K, int64_t n0, int64_t n1, float *y, const float *res,
                         int64_t ystride) {
#ifdef SPINDLE_X86
  if (spindle_qkernel_isa() == ISA_AVX512_VNNI)
    q8_0_avx512(act, astride, rows, qweight, scales, K, n0, n1, y, ystride);
  else
#endif
    q8_0_scalar(act, astride, rows, qweight, scales, K, n0, n1, y, ystride);
  if (res) add_residual(y, res, rows, n0, n1, ystride);
  return 0;
}
