// cuda: step graphs (cuda-step-graph.h).
#include "backend/cuda/cuda-step-graph.h"

#include <algorithm>

#include "backend/cuda/cuda-check.h"
#include "core/log.h"

namespace purbo::cuda {

namespace {

// Arena offsets keep 16-byte alignment (int4 loads of staged plans).
constexpr size_t kArenaAlign = 16;
// A decode step of a 30-layer model stages about 20 KB.
constexpr size_t kInitialArena = 256 * 1024;

}  // namespace

StepGraph::~StepGraph() {
    // Nothing can be returned from here; the stream is synchronised by the backend first.
    for (auto& [shape, r] : recordings_) {
        if (r.exec) (void)cudaGraphExecDestroy(r.exec);
    }
    if (host_) (void)cudaFreeHost(host_);
    if (device_) (void)cudaFree(device_);
    if (arena_copied_) (void)cudaEventDestroy(arena_copied_);
}

Status StepGraph::grow_arena(size_t bytes) {
    if (host_) PURBO_CUDA_TRY(cudaFreeHost(host_));
    if (device_) PURBO_CUDA_TRY(cudaFree(device_));  // waits for graphs still reading it
    host_ = device_ = nullptr;
    capacity_ = 0;
    PURBO_CUDA_TRY(cudaMallocHost(&host_, bytes));
    PURBO_CUDA_TRY(cudaMalloc(&device_, bytes));
    capacity_ = bytes;
    return Status::ok();
}

bool StepGraph::begin(uint64_t shape) {
    if (!enabled_) return false;
    auto fail = [&](const Status& st) {
        PURBO_LOG_WARN("cuda graphs off: {}", st.to_string());
        enabled_ = false;
        return false;
    };
    if (!arena_copied_) {
        if (const cudaError_t err = cudaEventCreateWithFlags(&arena_copied_, cudaEventDisableTiming); err != cudaSuccess)
            return fail(cuda_error("cudaEventCreateWithFlags", __FILE__, __LINE__, err));
    }
    // The host arena is rewritten below: the copy of the previous step must have read it.
    if (const cudaError_t err = cudaEventSynchronize(arena_copied_); err != cudaSuccess)
        return fail(cuda_error("cudaEventSynchronize", __FILE__, __LINE__, err));
    const size_t wanted = std::max({wanted_, capacity_, kInitialArena});
    if (wanted > capacity_) {
        if (Status st = grow_arena(wanted); !st.is_ok()) return fail(st);
    }
    used_ = 0;
    wanted_ = 0;
    cursor_ = 0;
    mismatch_ = false;
    benign_failure_ = false;
    if (!recordings_.contains(shape) && recordings_.size() >= kMaxShapes) {
        Recording& evicted = recordings_.begin()->second;
        if (evicted.exec) (void)cudaGraphExecDestroy(evicted.exec);
        recordings_.erase(recordings_.begin());
    }
    current_ = &recordings_[shape];
    if (current_->valid) {
        mode_ = Mode::kReplay;
        return true;
    }
    // Relaxed: the host code of an op may allocate (a plan made on first use) while capturing.
    if (const cudaError_t err = cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed); err != cudaSuccess)
        return fail(cuda_error("cudaStreamBeginCapture", __FILE__, __LINE__, err));
    current_->signatures.clear();
    current_->ends.clear();
    mode_ = Mode::kCapture;
    return true;
}

Result<void*> StepGraph::stage(const void* host, size_t bytes) {
    const size_t offset = (used_ + kArenaAlign - 1) / kArenaAlign * kArenaAlign;
    if (offset + bytes > capacity_) {
        wanted_ = std::max(wanted_, 2 * (offset + bytes));
        benign_failure_ = true;
        return error(StatusCode::kOutOfMemory, "cuda step graph: the step arena of {} bytes is full", capacity_);
    }
    std::memcpy(static_cast<std::byte*>(host_) + offset, host, bytes);
    used_ = offset + bytes;
    // Where and how much: the kernels' arguments hold the address, this holds the extent.
    const size_t extent[2] = {offset, bytes};
    (void)launch([] { return Status::ok(); }, extent);
    return static_cast<void*>(static_cast<std::byte*>(device_) + offset);
}

void StepGraph::record(std::span<const std::byte> signature) {
    std::vector<std::byte>& all = current_->signatures;
    all.insert(all.end(), signature.begin(), signature.end());
    current_->ends.push_back(all.size());
}

void StepGraph::check(std::span<const std::byte> signature) {
    if (mismatch_) return;
    const std::vector<size_t>& ends = current_->ends;
    if (cursor_ >= ends.size()) {
        mismatch_ = true;
        return;
    }
    const size_t begin = cursor_ == 0 ? 0 : ends[cursor_ - 1], end = ends[cursor_];
    ++cursor_;
    if (end - begin != signature.size() ||
        std::memcmp(current_->signatures.data() + begin, signature.data(), signature.size()) != 0)
        mismatch_ = true;
}

Status StepGraph::launch_graph() {
    if (used_ > 0) PURBO_CUDA_TRY(cudaMemcpyAsync(device_, host_, used_, cudaMemcpyHostToDevice, stream_));
    PURBO_CUDA_TRY(cudaEventRecord(arena_copied_, stream_));
    PURBO_CUDA_TRY(cudaGraphLaunch(current_->exec, stream_));
    return Status::ok();
}

Result<bool> StepGraph::end(bool ops_ok) {
    const Mode mode = mode_;
    mode_ = Mode::kClosed;
    if (mode == Mode::kClosed) return false;

    Recording& rec = *current_;
    if (mode == Mode::kReplay) {
        if (!ops_ok || mismatch_ || cursor_ != rec.ends.size()) {
            rec.valid = false;  // the next step of this shape records anew
            ++counts_.fell_back;
            return false;
        }
        PURBO_TRY(launch_graph());
        ++counts_.replayed;
        return true;
    }

    cudaGraph_t graph = nullptr;
    const cudaError_t captured = cudaStreamEndCapture(stream_, &graph);
    if (!ops_ok || captured != cudaSuccess || graph == nullptr) {
        (void)cudaGetLastError();  // an invalidated capture leaves a (non-sticky) error behind
        if (graph) (void)cudaGraphDestroy(graph);
        ++counts_.fell_back;
        if (!benign_failure_ && ++failures_ >= kMaxFailures) {
            PURBO_LOG_WARN("cuda graphs off: {} recordings in a row failed ({})", failures_,
                           captured != cudaSuccess ? cudaGetErrorString(captured) : "an op failed while recording");
            enabled_ = false;
        }
        return false;
    }
    // Same topology (the usual case: only arguments changed): update in place, else anew.
    if (rec.exec) {
        cudaGraphExecUpdateResultInfo info{};
        if (cudaGraphExecUpdate(rec.exec, graph, &info) != cudaSuccess) {
            (void)cudaGetLastError();
            (void)cudaGraphExecDestroy(rec.exec);
            rec.exec = nullptr;
        }
    }
    if (!rec.exec) {
        const cudaError_t err = cudaGraphInstantiate(&rec.exec, graph, 0);
        if (err != cudaSuccess) {
            (void)cudaGetLastError();
            rec.exec = nullptr;
            (void)cudaGraphDestroy(graph);
            PURBO_LOG_WARN("cuda graphs off: {}",
                           cuda_error("cudaGraphInstantiate", __FILE__, __LINE__, err).to_string());
            enabled_ = false;
            ++counts_.fell_back;
            return false;
        }
    }
    (void)cudaGraphDestroy(graph);
    failures_ = 0;
    rec.valid = true;
    PURBO_TRY(launch_graph());
    ++counts_.recorded;
    return true;
}

}  // namespace purbo::cuda
