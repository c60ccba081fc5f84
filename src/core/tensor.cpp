#include "core/tensor.h"

#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

namespace purbo {

int64_t Tensor::numel() const {
    if (ndim == 0) return data == nullptr ? 0 : 1;
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[static_cast<size_t>(i)];
    return n;
}

float* Tensor::f32() const {
    PURBO_ASSERT(dtype == DType::kF32, "tensor '{}' is {}, not f32", name, dtype_name(dtype));
    return static_cast<float*>(data);
}

Tensor Tensor::reshaped(std::initializer_list<int64_t> new_shape) const {
    Tensor t = *this;
    PURBO_ASSERT(new_shape.size() <= kMaxDims);
    t.ndim = static_cast<int>(new_shape.size());
    t.shape = {};
    size_t i = 0;
    for (int64_t d : new_shape) t.shape[i++] = d;
    PURBO_ASSERT(t.numel() == numel(), "reshape of {} to {} changes the element count", describe(),
                 t.describe());
    return t;
}

Tensor Tensor::rows(int64_t begin, int64_t end) const {
    PURBO_ASSERT(ndim >= 1 && begin >= 0 && begin <= end && end <= n_rows());
    Tensor t = *this;
    t.ndim = 2;
    t.shape = {end - begin, row_size(), 0, 0};
    t.data = row_ptr(begin);
    return t;
}

std::string Tensor::describe() const {
    std::string s = "(";
    for (int i = 0; i < ndim; ++i) s += fmt::format("{}{}", i ? ", " : "", shape[static_cast<size_t>(i)]);
    return s + ") " + std::string(dtype_name(dtype));
}

Tensor tensor_view(DType dtype, std::span<const int64_t> shape, void* data, std::shared_ptr<void> storage) {
    PURBO_ASSERT(shape.size() <= kMaxDims);
    Tensor t;
    t.dtype = dtype;
    t.ndim = static_cast<int>(shape.size());
    for (size_t i = 0; i < shape.size(); ++i) t.shape[i] = shape[i];
    t.data = data;
    t.storage = std::move(storage);
    return t;
}

Tensor tensor_cpu(DType dtype, std::span<const int64_t> shape, std::string name) {
    Tensor t = tensor_view(dtype, shape, nullptr);
    t.name = std::move(name);
    const size_t bytes = t.ndim == 0 ? dtype_row_bytes(dtype, 1) : t.nbytes();
    const size_t rounded = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
    PURBO_ASSERT(p != nullptr, "out of memory allocating {} bytes", rounded);
    std::memset(p, 0, rounded == 0 ? 64 : rounded);
    t.storage = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
    t.data = p;
    return t;
}

Tensor tensor_cpu(DType dtype, std::initializer_list<int64_t> shape, std::string name) {
    return tensor_cpu(dtype, std::span<const int64_t>(shape.begin(), shape.size()), std::move(name));
}

bool same_shape(const Tensor& a, const Tensor& b) { return a.ndim == b.ndim && a.shape == b.shape; }

}  // namespace purbo
