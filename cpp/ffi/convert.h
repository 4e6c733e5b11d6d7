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
/*! \brief [request_id, [[index, token_ids, logprobs|None, finish_reason], ...], finished, usage|None, error]. */
ffi::Array<ffi::Any> OutputsToArray(const std::vector<RequestOutput>& outputs);
AnyMap MetricsToMap(const EngineMetrics& m);

}  // namespace spindle

#endif  // SPINDLE_FFI_CONVERT_H_
