#include <cstring>

#include "backend/cpu-ref/cpu-ref-backend.h"
#include "core/fp16.h"
#include "core/fp8.h"
#include "core/quants.h"

namespace purbo {

Tensor CpuRefBackend::alloc(DType dtype, std::initializer_list<int64_t> shape, std::string name) {
    return tensor_cpu(dtype, shape, std::move(name));
}

Result<Tensor> CpuRefBackend::prepare_weight(const Tensor& host_weight) {
    if (host_weight.device != Device::kCpu)
        return error(StatusCode::kInvalidArgument, "prepare_weight: '{}' is not a host tensor",
                     host_weight.name);
    if (!dequantize_supported(host_weight.dtype))
        return error(StatusCode::kUnsupported, "prepare_weight: '{}' {}: dtype {} cannot be read",
                     host_weight.name, host_weight.describe(), dtype_name(host_weight.dtype));
    return host_weight;
}

namespace {

// Same dtype: a byte copy. f32 <-> bf16 (a bf16 KV cache on the cpu backend) or f8 e4m3
// (index keys): rounded to nearest even one way, widened exactly the other, as the cuda
// backend's copies.
Status copy_same(std::string_view op, const Tensor& src, const Tensor& dst) {
    auto narrow = [](DType t) { return t == DType::kBF16 || t == DType::kF8E4M3; };
    const bool rounded_pair = (src.dtype == DType::kF32 && narrow(dst.dtype)) ||
                              (narrow(src.dtype) && dst.dtype == DType::kF32);
    if ((src.dtype != dst.dtype && !rounded_pair) || !same_shape(src, dst))
        return error(StatusCode::kInvalidArgument, "{}: '{}' {} and '{}' {} differ", op, src.name,
                     src.describe(), dst.name, dst.describe());
    if (src.device != Device::kCpu || dst.device != Device::kCpu)
        return error(StatusCode::kInvalidArgument, "{}: '{}' or '{}' is not a host tensor", op,
                     src.name, dst.name);
    const int64_t count = src.numel();
    if (src.dtype == DType::kF32 && dst.dtype == DType::kBF16) {
        for (int64_t i = 0; i < count; ++i) dst.ptr<uint16_t>()[i] = f32_to_bf16(src.f32()[i]);
    } else if (src.dtype == DType::kBF16 && dst.dtype == DType::kF32) {
        for (int64_t i = 0; i < count; ++i) dst.f32()[i] = bf16_to_f32(src.ptr<uint16_t>()[i]);
    } else if (src.dtype == DType::kF32 && dst.dtype == DType::kF8E4M3) {
        for (int64_t i = 0; i < count; ++i) dst.ptr<uint8_t>()[i] = f32_to_f8e4m3(src.f32()[i]);
    } else if (src.dtype == DType::kF8E4M3 && dst.dtype == DType::kF32) {
        for (int64_t i = 0; i < count; ++i) dst.f32()[i] = f8e4m3_to_f32(src.ptr<uint8_t>()[i]);
    } else if (src.data != dst.data) {
        std::memmove(dst.data, src.data, src.nbytes());
    }
    return Status::ok();
}

}  // namespace

Status CpuRefBackend::to_host(const Tensor& src, const Tensor& host_dst) {
    return copy_same("to_host", src, host_dst);
}

Status CpuRefBackend::from_host(const Tensor& host_src, const Tensor& dst) {
    return copy_same("from_host", host_src, dst);
}

std::unique_ptr<Backend> backend_create_cpu_ref(const BackendOptions& options) {
    return std::make_unique<CpuRefBackend>(options);
}

}  // namespace purbo
