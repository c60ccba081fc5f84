// cuda: creation, memory, weights and host <-> device copies.
#include "backend/cuda/cuda-backend.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "backend/cuda/cuda-check.h"
#include "core/env.h"
#include "core/fp16.h"
#include "core/fp8.h"
#include "core/log.h"
#include "core/quants.h"

namespace purbo {

int cuda_device_count() {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
        (void)cudaGetLastError();  // clear the sticky "no device / no driver" error
        return 0;
    }
    return count;
}

Result<std::unique_ptr<CudaBackend>> CudaBackend::create(const BackendOptions& options) {
    if (cuda_device_count() == 0)
        return error(StatusCode::kUnsupported, "backend 'cuda': no CUDA device is visible on this machine");
    std::unique_ptr<CudaBackend> backend(new CudaBackend());
    PURBO_CUDA_TRY(cudaGetDevice(&backend->device_));
    PURBO_CUDA_TRY(cudaDeviceGetAttribute(&backend->n_sms_, cudaDevAttrMultiProcessorCount, backend->device_));
    PURBO_CUDA_TRY(cudaStreamCreateWithFlags(&backend->stream_, cudaStreamNonBlocking));
    PURBO_ASSIGN_OR_RETURN(backend->gemm_, cuda::LtGemm::create());
    backend->graph_ = std::make_unique<cuda::StepGraph>(backend->stream_);
    if (!options.step_graphs || env_flag("PURBO_NO_CUDA_GRAPHS")) backend->graph_->disable();
    return backend;
}

CudaBackend::~CudaBackend() {
    // Errors on the way out cannot be returned; the process is usually ending anyway.
    if (stream_) (void)cudaStreamSynchronize(stream_);
    cudnn_.reset();  // its handle is bound to the stream
    side_.cudnn.reset();
    for (cudaEvent_t e : {side_.fork, side_.join}) {
        if (e) (void)cudaEventDestroy(e);
    }
    if (side_.stream) (void)cudaStreamDestroy(side_.stream);
    graph_.reset();
    gemm_.reset();
    for (Scratch* s :
         {&x_bf16_, &indices_, &attn_partial_, &attn_plan_, &select_, &cudnn_io_, &cudnn_paged_}) {
        if (s->ptr) (void)cudaFree(s->ptr);
    }
    for (PinnedSlot& slot : pinned_) {
        if (slot.ptr) (void)cudaFreeHost(slot.ptr);
        if (slot.copied) (void)cudaEventDestroy(slot.copied);
    }
    if (stream_) (void)cudaStreamDestroy(stream_);
}

Status require_device(std::string_view op, const Tensor& t, std::string_view role) {
    if (t.device != Device::kCuda)
        return error(StatusCode::kInvalidArgument,
                     "{}: {} '{}' {} is a host tensor; the cuda backend takes tensors from its alloc "
                     "or prepare_weight",
                     op, role, t.name, t.describe());
    return Status::ok();
}

Result<void*> CudaBackend::reserve(Scratch& scratch, size_t bytes) {
    if (bytes <= scratch.bytes) return scratch.ptr;
    if (graph_->capturing()) {  // cudaFree cannot run while the stream is being captured
        graph_->scratch_must_grow();
        return error(StatusCode::kOutOfMemory, "cuda: scratch of {} bytes must grow to {} while recording a graph",
                     scratch.bytes, bytes);
    }
    // Grow by at least half again so a slowly growing batch does not reallocate every call.
    const size_t grown = std::max(bytes, scratch.bytes + scratch.bytes / 2);
    if (scratch.ptr) PURBO_CUDA_TRY(cudaFree(scratch.ptr));  // waits for kernels still reading it
    scratch.ptr = nullptr;
    scratch.bytes = 0;
    PURBO_CUDA_TRY(cudaMalloc(&scratch.ptr, grown));
    scratch.bytes = grown;
    return scratch.ptr;
}

Result<void*> CudaBackend::stage(Scratch& scratch, const void* host, size_t bytes) {
    if (graph_->open()) return graph_->stage(host, bytes);  // the step arena
    PURBO_ASSIGN_OR_RETURN(void* dst, reserve(scratch, bytes));
    if (bytes == 0) return dst;
    PinnedSlot& slot = pinned_[next_pinned_];
    next_pinned_ = (next_pinned_ + 1) % kPinnedSlots;
    if (slot.copied) {
        PURBO_CUDA_TRY(cudaEventSynchronize(slot.copied));  // its last copy has read it
    } else {
        PURBO_CUDA_TRY(cudaEventCreateWithFlags(&slot.copied, cudaEventDisableTiming));
    }
    if (bytes > slot.bytes) {
        if (slot.ptr) PURBO_CUDA_TRY(cudaFreeHost(slot.ptr));
        slot.ptr = nullptr;
        slot.bytes = 0;
        const size_t grown = std::max<size_t>(bytes, 64 * 1024);
        PURBO_CUDA_TRY(cudaMallocHost(&slot.ptr, grown));
        slot.bytes = grown;
    }
    std::memcpy(slot.ptr, host, bytes);
    PURBO_CUDA_TRY(cudaMemcpyAsync(dst, slot.ptr, bytes, cudaMemcpyHostToDevice, stream_));
    PURBO_CUDA_TRY(cudaEventRecord(slot.copied, stream_));
    return dst;
}

Result<Tensor> CudaBackend::alloc_shape(DType dtype, std::span<const int64_t> shape, std::string name) {
    if (shape.size() > static_cast<size_t>(kMaxDims))
        return error(StatusCode::kInvalidArgument, "alloc '{}': {} dims, at most {}", name, shape.size(), kMaxDims);
    Tensor t;
    t.dtype = dtype;
    t.device = Device::kCuda;
    t.ndim = static_cast<int>(shape.size());
    for (size_t i = 0; i < shape.size(); ++i) {
        if (shape[i] < 0) return error(StatusCode::kInvalidArgument, "alloc '{}': dim {} is {}", name, i, shape[i]);
        t.shape[i] = shape[i];
    }
    t.name = std::move(name);
    // At least one allocation granule, so that an empty tensor still has a distinct pointer.
    const size_t bytes = std::max<size_t>(t.nbytes(), 256);
    void* ptr = nullptr;
    PURBO_CUDA_TRY(cudaMalloc(&ptr, bytes));
    t.data = ptr;
    t.storage = std::shared_ptr<void>(ptr, [](void* p) { (void)cudaFree(p); });
    // On the backend's stream: ops enqueued later on it see the zeros.
    PURBO_CUDA_TRY(cudaMemsetAsync(ptr, 0, bytes, stream_));
    return t;
}

Tensor CudaBackend::alloc(DType dtype, std::initializer_list<int64_t> shape, std::string name) {
    auto t = alloc_shape(dtype, std::span<const int64_t>(shape.begin(), shape.size()), std::move(name));
    if (!t.is_ok()) {
        PURBO_LOG_ERROR("cuda alloc: {}", t.status().to_string());
        return Tensor{};  // empty: every op rejects it with "has no data"
    }
    return std::move(t).value();
}

Result<Tensor> CudaBackend::prepare_weight(const Tensor& host_weight) {
    const Tensor& w = host_weight;
    if (w.device != Device::kCpu)
        return error(StatusCode::kInvalidArgument, "prepare_weight: '{}' is not a host tensor", w.name);
    if (w.empty() || w.ndim < 1)
        return error(StatusCode::kInvalidArgument, "prepare_weight: '{}' {} has no data", w.name, w.describe());
    if (!dequantize_supported(w.dtype))
        return error(StatusCode::kUnsupported, "prepare_weight: '{}' {}: dtype {} cannot be read", w.name,
                     w.describe(), dtype_name(w.dtype));
    const std::span<const int64_t> shape(w.shape.data(), static_cast<size_t>(w.ndim));
    const int64_t rows = w.n_rows(), k = w.row_size();

    if (w.ndim == 1) {  // norm weights and biases stay f32: the ops read them in f32
        std::vector<float> values(static_cast<size_t>(k));
        dequantize_row(w.dtype, w.data, values.data(), k);
        PURBO_ASSIGN_OR_RETURN(Tensor dev, alloc_shape(DType::kF32, shape, w.name));
        PURBO_CUDA_TRY(cudaMemcpyAsync(dev.data, values.data(), values.size() * 4, cudaMemcpyHostToDevice, stream_));
        return dev;
    }

    // Matrices: bf16, row by row through the one definition of the bytes (dequantize_row).
    std::vector<uint16_t> bits(static_cast<size_t>(rows * k));
    if (w.dtype == DType::kBF16) {
        std::memcpy(bits.data(), w.data, bits.size() * 2);
    } else {
#pragma omp parallel
        {
            std::vector<float> row(static_cast<size_t>(k));
#pragma omp for schedule(static)
            for (int64_t r = 0; r < rows; ++r) {
                dequantize_row(w.dtype, w.row_ptr(r), row.data(), k);
                uint16_t* dst = bits.data() + r * k;
                for (int64_t i = 0; i < k; ++i) dst[i] = f32_to_bf16(row[static_cast<size_t>(i)]);
            }
        }
    }
    PURBO_ASSIGN_OR_RETURN(Tensor dev, alloc_shape(DType::kBF16, shape, w.name));
    PURBO_CUDA_TRY(cudaMemcpyAsync(dev.data, bits.data(), bits.size() * 2, cudaMemcpyHostToDevice, stream_));
    return dev;
}

namespace {

Status check_copy(std::string_view op, const Tensor& host, const Tensor& dev) {
    if (host.empty() || dev.empty())
        return error(StatusCode::kInvalidArgument, "{}: '{}' or '{}' has no data", op, host.name, dev.name);
    // i32 (block selections, counts) copies as it is, to and from a host i32 tensor.
    const DType host_dtype = dev.dtype == DType::kI32 ? DType::kI32 : DType::kF32;
    if (host.device != Device::kCpu || host.dtype != host_dtype)
        return error(StatusCode::kInvalidArgument, "{}: '{}' {} must be a host {} tensor", op, host.name,
                     host.describe(), dtype_name(host_dtype));
    PURBO_TRY(require_device(op, dev, "tensor"));
    if (dev.dtype != DType::kF32 && dev.dtype != DType::kBF16 && dev.dtype != DType::kF8E4M3 &&
        dev.dtype != DType::kI32)
        return error(StatusCode::kUnsupported,
                     "{}: device tensor '{}' {}: only f32, bf16, f8_e4m3 and i32 copy", op,
                     dev.name, dev.describe());
    if (!same_shape(host, dev))
        return error(StatusCode::kInvalidArgument, "{}: '{}' {} and '{}' {} differ in shape", op, host.name,
                     host.describe(), dev.name, dev.describe());
    return Status::ok();
}

}  // namespace

Status CudaBackend::to_host(const Tensor& src, const Tensor& host_dst) {
    PURBO_TRY(check_copy("to_host", host_dst, src));
    if (graph_->open())
        return error(StatusCode::kInvalidArgument, "to_host '{}': no host reads inside a graph step", src.name);
    const size_t count = static_cast<size_t>(src.numel());
    if (src.dtype == DType::kF32 || src.dtype == DType::kI32) {  // 4-byte elements, as they are
        PURBO_CUDA_TRY(cudaMemcpyAsync(host_dst.data, src.data, count * 4, cudaMemcpyDeviceToHost, stream_));
        PURBO_CUDA_TRY(cudaStreamSynchronize(stream_));
        return Status::ok();
    }
    if (src.dtype == DType::kF8E4M3) {
        std::vector<uint8_t> bytes(count);
        PURBO_CUDA_TRY(
            cudaMemcpyAsync(bytes.data(), src.data, count, cudaMemcpyDeviceToHost, stream_));
        PURBO_CUDA_TRY(cudaStreamSynchronize(stream_));
        for (size_t i = 0; i < count; ++i) host_dst.ptr<float>()[i] = f8e4m3_to_f32(bytes[i]);
        return Status::ok();
    }
    std::vector<uint16_t> bits(count);
    PURBO_CUDA_TRY(cudaMemcpyAsync(bits.data(), src.data, count * 2, cudaMemcpyDeviceToHost, stream_));
    PURBO_CUDA_TRY(cudaStreamSynchronize(stream_));
    for (size_t i = 0; i < count; ++i) host_dst.ptr<float>()[i] = bf16_to_f32(bits[i]);
    return Status::ok();
}

Status CudaBackend::from_host(const Tensor& host_src, const Tensor& dst) {
    PURBO_TRY(check_copy("from_host", host_src, dst));
    if (graph_->open())
        return error(StatusCode::kInvalidArgument, "from_host '{}': no host copies inside a graph step", dst.name);
    const size_t count = static_cast<size_t>(dst.numel());
    if (dst.dtype == DType::kF32 || dst.dtype == DType::kI32) {  // 4-byte elements, as they are
        PURBO_CUDA_TRY(cudaMemcpyAsync(dst.data, host_src.data, count * 4, cudaMemcpyHostToDevice, stream_));
        return Status::ok();
    }
    // The narrow types are rounded on the host; the copies below are staged from pageable
    // memory, so the vectors may go once cudaMemcpyAsync returns.
    if (dst.dtype == DType::kF8E4M3) {
        std::vector<uint8_t> bytes(count);
        for (size_t i = 0; i < count; ++i) bytes[i] = f32_to_f8e4m3(host_src.ptr<float>()[i]);
        PURBO_CUDA_TRY(
            cudaMemcpyAsync(dst.data, bytes.data(), count, cudaMemcpyHostToDevice, stream_));
        return Status::ok();
    }
    std::vector<uint16_t> bits(count);
    for (size_t i = 0; i < count; ++i) bits[i] = f32_to_bf16(host_src.ptr<float>()[i]);
    PURBO_CUDA_TRY(cudaMemcpyAsync(dst.data, bits.data(), count * 2, cudaMemcpyHostToDevice, stream_));
    return Status::ok();
}

void CudaBackend::synchronize() {
    if (graph_->open()) {  // a capture would be invalidated; a replay has nothing on the stream yet
        PURBO_LOG_ERROR("cuda synchronize: called inside a graph step");
        return;
    }
    const cudaError_t err = cudaStreamSynchronize(stream_);
    if (err != cudaSuccess) PURBO_LOG_ERROR("cuda synchronize: {}", cudaGetErrorString(err));
}

Result<std::unique_ptr<Backend>> backend_create_cuda(const BackendOptions& options) {
    PURBO_ASSIGN_OR_RETURN(std::unique_ptr<CudaBackend> backend, CudaBackend::create(options));
    return std::unique_ptr<Backend>(std::move(backend));
}

}  // namespace purbo
