/* What one core gets out of the int8 fused decode blocks: a SmolLM2-shaped q4_1 batch-1 step (30 linked
 * MLP blocks, each going on to the next layer's norm + QKV, and the q8_0 output head: 96 MB of weights in
 * 2 MB pages) run by one thread as ONE of two threads would run it. Each phase's sync words are preset so
 * that the other half of every matmul is already taken and done (blocks.h's layout): the thread streams
 * only its own half and never waits, as a core does when both run in step. Alternating step by step, the
 * same thread makes plain kernel calls over the same halves (spindle_qmm_q4_1 / _q8_0 with the
 * activations quantized in between): the kernels' own streaming speed for the same bytes. The ratio of
 * the two is the blocks' per-core efficiency, which the machine's fast state (two cores that each stream
 * on their own) exposes and its slow state (two threads sharing one core's memory pipeline) hides.
 *
 * Built by bench/block_core.py against a source tree's kernels (-I its kernels directory), run as
 *   block_core STEPS
 * and prints "blocks SECONDS plain SECONDS bytes BYTES": the median step of each, and the bytes one half
 * reads per step. */
#define _GNU_SOURCE
#include "qmatmul.c"

#include <stdio.h>
#include <sys/mman.h>
#include <time.h>

#define LAYERS 30
#define HID 576
#define INTER 1536
#define NQKV 960
#define VOCAB 49152

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static int by_value(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static size_t q4_1_bytes(int64_t K, int64_t N) { return (size_t)(N / TILE) * (K / QK) * Q4_1_GROUP_BYTES; }

/* Kernels that take the halves of o_proj and down the other way round (blocks.h, next_matmul's `odd`): this
 * thread, the caller of half 0, streams their half 1. */
#ifdef SPINDLE_BLOCKS_ODD_MATRICES
#define ODD 1
#else
#define ODD 0
#endif

/* Phase `p` of a sync array (after sync_lines) with `units` units: half `which`'s share taken and done. */
static void half_done(int32_t *lines, int p, int64_t units, int which) {
  int32_t *hw = lines + p * PHASE_WORDS + (which ? HALF_WORDS : 0);
  const int64_t share = which ? units - units / 2 : units / 2;
  *(int64_t *)(hw + PHASE_RANGE) = share; /* taken from the bottom of that half: all of it */
  hw[PHASE_DONE] = (int32_t)share;
}

int main(int argc, char **argv) {
  const int steps = argc > 1 ? atoi(argv[1]) : 100;
  size_t off[LAYERS][4], total = 0;
  for (int l = 0; l < LAYERS; l++) {
    off[l][0] = total, total += q4_1_bytes(HID, NQKV);
    off[l][1] = total, total += q4_1_bytes(HID, HID);
    off[l][2] = total, total += q4_1_bytes(HID, 2 * INTER);
    off[l][3] = total, total += q4_1_bytes(INTER, HID);
  }
  const size_t head = total;
  total += (size_t)(VOCAB / TILE) * q8_0_tile_bytes(HID / QK);
  const size_t page = 2u << 20;
  char *raw = mmap(NULL, total + 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return 1;
  char *w = (char *)(((uintptr_t)raw + page - 1) & ~(uintptr_t)(page - 1));
  madvise(w, total, MADV_HUGEPAGE);
  srand(1);
  for (size_t i = 0; i + 1 < total; i += 2) *(uint16_t *)(w + i) = (uint16_t)(0x3800 | (rand() & 0x3FF)); /* finite */

  static float x[INTER], a[INTER], y[INTER], x2[INTER], gu[2 * INTER], h[INTER], qkv[NQKV], logits[VOCAB],
      norm_w[INTER];
  for (int i = 0; i < INTER; i++) x[i] = a[i] = (float)rand() / RAND_MAX - 0.5f, norm_w[i] = 1.0f;
  static int8_t act_a[8192] __attribute__((aligned(64))), act_n[8192] __attribute__((aligned(64))),
      act_h[8192] __attribute__((aligned(64))), act_2[8192] __attribute__((aligned(64)));
  static int32_t sync[LAYERS + 1][7 * PHASE_WORDS + SYNC_SLACK_WORDS];
  double *blocks = malloc(sizeof(double) * steps), *plain = malloc(sizeof(double) * steps);
  const int64_t rb_h = spindle_qact_row_bytes(HID), rb_i = spindle_qact_row_bytes(INTER);

  for (int s = 0; s < 2 * steps; s++) {
    const double t = now();
    if (s % 2 == 0) {
      memset(sync, 0, sizeof sync);
      for (int l = 0; l <= LAYERS; l++) {
        int32_t *lines = sync_lines(sync[l]);
        if (l == LAYERS) { /* the first layer's norm + QKV: phase 1 the matmul */
          half_done(lines, 1, NQKV / TILE, 1);
          continue;
        }
        half_done(lines, 1, HID / TILE, 1 ^ ODD);                           /* o_proj */
        half_done(lines, 3, INTER / QK, 1);                                 /* gate_up, in groups */
        half_done(lines, 4, HID / TILE, 1 ^ ODD);                           /* down */
        half_done(lines, 6, (l == LAYERS - 1 ? VOCAB : NQKV) / TILE, 1);    /* the linked matmul */
      }
      spindle_qblock_norm_matmul(sync[LAYERS], 0, 1, x, norm_w, 1e-5f, HID, act_n, 1, w + off[0][0], NQKV, qkv, 1,
                                 w + off[0][1], HID, HID);
      for (int l = 0; l < LAYERS; l++) {
        const int last = l == LAYERS - 1;
        spindle_qblock_mlp(sync[l], 0, 1, a, HID, l % 2 ? y : x, HID, INTER, 1, w + off[l][1], norm_w, 1e-5f, 1,
                           w + off[l][2], 1, w + off[l][3], act_a, act_n, act_h, x2, gu, h, l % 2 ? x : y, norm_w,
                           1e-5f, last ? 0 : 1, last ? w + head : w + off[l + 1][0], last ? VOCAB : NQKV, act_2,
                           last ? logits : qkv, last ? -1 : 1, last ? NULL : w + off[l + 1][1], HID, HID);
      }
      blocks[s / 2] = now() - t;
    } else {
      spindle_qact_quantize(x, HID, act_n, 1);
      for (int l = 0; l < LAYERS; l++) {
        spindle_qmm_q4_1(act_n, rb_h, 1, (const uint32_t *)(w + off[l][0]), HID, 0, NQKV / 2, qkv, NULL, NQKV);
        spindle_qact_quantize(a, HID, act_a, 1);
        spindle_qmm_q4_1(act_a, rb_h, 1, (const uint32_t *)(w + off[l][1]), HID, ODD * HID / 2, (1 + ODD) * HID / 2,
                         x2, x, HID);
        spindle_qact_quantize(x2, HID, act_n, 1);
        spindle_qmm_q4_1(act_n, rb_h, 1, (const uint32_t *)(w + off[l][2]), HID, 0, INTER, gu, NULL, 2 * INTER);
        spindle_qact_quantize(gu, INTER, act_h, 1);
        spindle_qmm_q4_1(act_h, rb_i, 1, (const uint32_t *)(w + off[l][3]), INTER, ODD * HID / 2, (1 + ODD) * HID / 2,
                         y, x2, HID);
        spindle_qact_quantize(y, HID, act_n, 1);
      }
      spindle_qmm_q8_0(act_n, rb_h, 1, (const int8_t *)(w + head), HID, 0, VOCAB / 2, logits, NULL, VOCAB);
      plain[s / 2] = now() - t;
    }
  }
  qsort(blocks, steps, sizeof(double), by_value);
  qsort(plain, steps, sizeof(double), by_value);
  printf("blocks %.9f plain %.9f bytes %zu\n", blocks[steps / 2], plain[steps / 2], total / 2);
  return 0;
}
