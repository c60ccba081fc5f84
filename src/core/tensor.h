// A tensor: a typed, contiguous, row-major buffer with up to 4 dimensions.
// Shapes are written outermost first, as in PyTorch: a weight of a linear layer with
// n_in inputs and n_out outputs is (n_out, n_in), and each of its n_out rows holds n_in
// contiguous elements (for quantised types: n_in / block_size blocks).
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>

#include "core/dtype.h"
#include "core/status.h"

namespace purbo {

enum class Device : uint8_t { kCpu, kCuda };

constexpr int kMaxDims = 4;

struct Tensor {
    DType dtype = DType::kF32;
    Device device = Device::kCpu;
    int ndim = 0;
    std::array<int64_t, kMaxDims> shape{};  // outermost first; unused dims are 0
    void* data = nullptr;
    std::shared_ptr<void> storage;  // keeps `data` alive: a heap block, an mmap, a device buffer
    std::string name;

    bool empty() const { return data == nullptr; }
    int64_t dim(int i) const { return shape[static_cast<size_t>(i < 0 ? ndim + i : i)]; }
    int64_t numel() const;
    int64_t row_size() const { return ndim == 0 ? 1 : shape[static_cast<size_t>(ndim - 1)]; }
    int64_t n_rows() const { return row_size() == 0 ? 0 : numel() / row_size(); }
    size_t row_bytes() const { return dtype_row_bytes(dtype, row_size()); }
    size_t nbytes() const { return static_cast<size_t>(n_rows()) * row_bytes(); }

    template <class T>
    T* ptr() const { return static_cast<T*>(data); }
    float* f32() const;  // asserts dtype == f32
    // Pointer to row r of the flattened (n_rows, row_size) view.
    uint8_t* row_ptr(int64_t r) const { return static_cast<uint8_t*>(data) + r * row_bytes(); }

    // Same storage, another shape with the same number of elements.
    Tensor reshaped(std::initializer_list<int64_t> new_shape) const;
    // Rows [begin, end) of the flattened (n_rows, row_size) view; shares storage.
    Tensor rows(int64_t begin, int64_t end) const;
    // "(2, 576) f32"
    std::string describe() const;
};

// Heap tensor on the CPU, 64-byte aligned, zero-filled.
Tensor tensor_cpu(DType dtype, std::initializer_list<int64_t> shape, std::string name = {});
Tensor tensor_cpu(DType dtype, std::span<const int64_t> shape, std::string name = {});
// Non-owning view of existing memory.
Tensor tensor_view(DType dtype, std::span<const int64_t> shape, void* data, std::shared_ptr<void> storage = {});

bool same_shape(const Tensor& a, const Tensor& b);

}  // namespace purbo
