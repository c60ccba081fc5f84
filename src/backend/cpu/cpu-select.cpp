// cpu: top-p block selection, one pass with a histogram of block masses.
#include "backend/cpu/cpu-backend.h"
#include "backend/op-checks.h"

namespace purbo {

Status CpuBackend::select_blocks(const Tensor& iq, const Tensor& index_keys, const TokenPlacement& place,
                                    const BlockSelectParams& params, const Tensor& blocks, const Tensor& counts) {
    PURBO_TRY(check_select_blocks(iq, index_keys, place, params, blocks, counts));
    return error(StatusCode::kUnsupported, "select_blocks: not implemented yet on cpu");
}

}  // namespace purbo
