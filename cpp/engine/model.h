// The compiled model: the Relax VM executable, its packed weights and the paged KV cache, reached
// through tvm-ffi global functions (no TVM C++ headers needed).
#ifndef SPINDLE_ENGINE_MODEL_H_
#define SPINDLE_ENGINE_MODEL_H_

#include <tvm/ffi/any.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/optional.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config.h"

namespace spindle {

namespace ffi = tvm::ffi;

class Model {
 public:
  /*! \brief Load `dir` (model.so, params/, spindle-config.json). Errors name the file at fault. */
  static std::unique_ptr<Model> Load(const std::string& dir, Status* status);
  ~Model();

  const ModelInfo& info() const { return info_; }

  /*! \brief Create the paged KV cache; returns its total number of pages. */
  int64_t CreateKVCache(int64_t max_num_sequence, int64_t max_total_sequence_length, int64_t prefill_chunk_size,
                        int64_t page_size);
  int64_t AvailablePages() const;
  void AddSequence(int64_t seq_id);
  void RemoveSequence(int64_t seq_id);
  /*! \brief Fork `child` from `parent` at its end. */
  void ForkSequence(int64_t parent, int64_t child);
  /*! \brief Drop every sequence. */
  void ClearKV();

  /*!
   * \brief One batch_prefill over several sequences packed together.
   * \param tokens the concatenated new tokens of every sequence, `lengths[i]` of them for `seq_ids[i]`.
   * \return logits float32 [1, num_seqs, vocab] at the last token of each sequence.
   */
  ffi::Tensor Prefill(const std::vector<int64_t>& seq_ids, const std::vector<int64_t>& lengths,
                      const std::vector<int32_t>& tokens);
  /*! \brief One batch_decode step: one new token per sequence. Returns logits float32 [num_seqs, 1, vocab]. */
  ffi::Tensor Decode(const std::vector<int64_t>& seq_ids, const std::vector<int32_t>& tokens);

 private:
  Model() = default;
  ffi::Tensor Embed(const std::vector<int32_t>& tokens);
  void BeginForward(const std::vector<int64_t>& seq_ids, const std::vector<int64_t>& lengths);

  ModelInfo info_;
  ffi::Optional<ffi::Module> lib_;
  ffi::Optional<ffi::Module> vm_;
  ffi::Any params_;
  ffi::Any kv_cache_;
  ffi::Function f_embed_, f_prefill_, f_decode_, f_create_kv_;
  ffi::Function f_reshape_, f_add_seq_, f_remove_seq_, f_fork_seq_, f_begin_, f_end_, f_avail_pages_, f_clear_;
};

/*! \brief A CPU int32 / float32 tensor allocated through tvm-ffi. */
ffi::Tensor NewCPUTensor(const std::vector<int64_t>& shape, DLDataType dtype);

}  // namespace spindle

#endif  // SPINDLE_ENGINE_MODEL_H_
