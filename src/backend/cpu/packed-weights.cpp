#include "backend/cpu/packed-weights.h"

#include <iterator>

namespace purbo {
namespace {

bool same_owner(const std::weak_ptr<void>& a, const std::shared_ptr<void>& b) {
    return !a.owner_before(b) && !b.owner_before(a);
}

}  // namespace

void PackedWeights::add(const Tensor& w) {
    std::erase_if(entries_, [](const auto& item) { return item.second.owner.expired(); });
    if (w.dtype != DType::kQ4_1 || w.ndim != 2 || w.device != Device::kCpu || !w.storage ||
        w.dim(0) % kQ4_1x8Rows != 0 || w.dim(1) % kQK4_1 != 0)
        return;
    Entry entry{w.storage, w.dim(0), w.dim(1), {}};
    const int64_t nb = w.dim(1) / kQK4_1;
    entry.blocks.resize(static_cast<size_t>(w.dim(0) / kQ4_1x8Rows * nb));
    repack_q4_1_x8(static_cast<const BlockQ4_1*>(w.data), w.dim(0), nb, entry.blocks.data());
    entries_[w.data] = std::move(entry);
}

const BlockQ4_1x8* PackedWeights::find(const Tensor& w) const {
    if (w.dtype != DType::kQ4_1 || w.ndim != 2) return nullptr;
    const auto it = entries_.find(w.data);
    if (it == entries_.end()) return nullptr;
    const Entry& e = it->second;
    if (e.owner.expired() || !same_owner(e.owner, w.storage) || e.rows != w.dim(0) || e.cols != w.dim(1))
        return nullptr;
    return e.blocks.data();
}

}  // namespace purbo
