// Model weights in 2 MB pages: a decode step streams every weight once, ~100 MB for the default model,
// and with 4 KB pages each page costs a TLB miss and restarts the hardware prefetcher's stream.
#ifndef SPINDLE_ENGINE_HUGE_PAGES_H_
#define SPINDLE_ENGINE_HUGE_PAGES_H_

#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>

#include <cstdint>

namespace spindle {

namespace ffi = tvm::ffi;

/*! \brief What PackInHugePages did. */
struct PackedWeights {
  ffi::Array<ffi::Tensor> tensors;
  /*! \brief Bytes of the block the tensors were copied into (0: the tensors were returned as they were). */
  int64_t block_bytes = 0;
  /*! \brief Bytes of the block that the OS backs with 2 MB pages, read from /proc/self/smaps after the copy. */
  int64_t huge_page_bytes = 0;
};

/*!
 * \brief Copy CPU tensors into one contiguous, 2 MB-aligned block of anonymous memory advised for
 * transparent huge pages, each tensor 64-byte aligned, in order; the block lives as long as any of the
 * returned tensors. Tensors on other devices, an empty list, or a failed mapping leave the input as it
 * is (block_bytes 0). Off Linux the block is ordinary memory.
 */
PackedWeights PackInHugePages(const ffi::Array<ffi::Tensor>& tensors);

/*! \brief PackInHugePages, unless SPINDLE_HUGE_PAGES=0 (then the input as it is, block_bytes 0): what the
 * engine's model loading and the `spindle.engine.pack_weights` global function do. */
PackedWeights PackWeights(const ffi::Array<ffi::Tensor>& tensors);

}  // namespace spindle

#endif  // SPINDLE_ENGINE_HUGE_PAGES_H_
