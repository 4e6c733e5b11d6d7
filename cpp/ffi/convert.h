// Typed conversion between tvm-ffi values and the engine's structs: configs in, outputs and
// metrics out (Arrays and Maps with typed fields, not JSON strings).
#ifndef SPINDLE_FFI_CONVERT_H_
#define SPINDLE_FFI_CONVERT_H_

#include <tvm/ffi/any.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/string.h>

#include <vector>

#include "../engine/config.h"
#include "../engine/output.h"

namespace spindle {

namespace ffi = tvm::ffi;
using AnyMap = ffi::Map<ffi::String, ffi::Any>;

Status EngineConfigFromMap(const AnyMap& map, EngineConfig* out);
Status GenerationConfigFromMap(const AnyMap& map, GenerationConfig* out);
Status TokenIdsFromAny(const ffi::Any& value, std::vector<int32_t>* out);

/*! \brief None on success, else [code, field, message]. */
ffi::Any StatusToAny(const Status& status);
/*!
 * \brief The outputs of a step packed so that the Python side converts them with a few calls:
 * [request_ids (Array of String), ints (Shape), extras (Array)]. Per output, ints holds finished (0/1) and
 * the branch count, then per branch: index, finish reason code, stop token id (-1: none), token count and
 * the token ids. extras holds per output None, or [usage|None, error, logprobs|None] when the output has
 * usage, an error or logprobs; usage is [prompt_tokens, completion_tokens, ttft_s, prefill_s, decode_s,
 * end_to_end_s], logprobs per branch [[token_id, logprob, [[token_id, logprob], ...]], ...].
 */
ffi::Array<ffi::Any> OutputsToPacked(const std::vector<RequestOutput>& outputs);
AnyMap MetricsToMap(const EngineMetrics& m);

}  // namespace spindle

#endif  // SPINDLE_FFI_CONVERT_H_
