// cpu-ref: top-p block selection, the exact reference (sort + cumulative sum).
#include "backend/cpu-ref/cpu-ref-backend.h"
#include "backend/op-checks.h"

namespace purbo {

Status CpuRefBackend::select_blocks(const Tensor& iq, const Tensor& index_keys, const TokenPlacement& place,
                                    const BlockSelectParams& params, const Tensor& blocks, const Tensor& counts) {
    PURBO_TRY(check_select_blocks(iq, index_keys, place, params, blocks, counts));
    return error(StatusCode::kUnsupported, "select_blocks: not implemented yet on cpu-ref");
}

}  // namespace purbo
