#include <cstring>

#include "backend/cpu-ref/cpu-ref-backend.h"
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

Status copy_same(std::string_view op, const Tensor& src, const Tensor& dst) {
    if (src.dtype != dst.dtype || !same_shape(src, dst))
        return error(StatusCode::kInvalidArgument, "{}: '{}' {} and '{}' {} differ", op, src.name,
                     src.describe(), dst.name, dst.describe());
    if (src.device != Device::kCpu || dst.device != Device::kCpu)
        return error(StatusCode::kInvalidArgument, "{}: '{}' or '{}' is not a host tensor", op,
                     src.name, dst.name);
    if (src.data != dst.data) std::memmove(dst.data, src.data, src.nbytes());
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
