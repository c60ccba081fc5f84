// cuda: a step's launches recorded as a CUDA graph and replayed (Backend::begin_graph_step).
//
// A decode step of the default model is about 500 small kernels; launched one by one, the GPU
// waits on the host between them for close to half of the step. Here the first step is
// recorded by stream capture and instantiated; every later step runs only the ops' host code:
//  - their staged inputs (token ids, positions, attention plans) go into a step arena, a
//    pinned host buffer copied in one transfer to a device buffer the graph's kernels read;
//  - each launch is compared, argument for argument, with the recorded one instead of being
//    issued.
// A recording is kept per step shape (the caller's key: tokens and logit rows of the batch),
// so that alternating shapes (one sequence decoding, then two) replay each their own graph.
// When every launch matches, the arena is copied and the graph launched. When one differs
// (a decode step's attention plan gains a split every few hundred positions; a scratch buffer
// grew), the step is run again without the graph and the next step records anew, updating
// the instantiated graph in place where its topology allows.
//
// What makes a replay right: every kernel argument (pointers, sizes, counts that set a grid)
// is in the compared signature, and every value that changes from step to step reaches the
// kernels through the arena, whose layout is part of the signature too.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstring>
#include <map>
#include <span>
#include <type_traits>
#include <vector>

#include "core/status.h"

namespace purbo::cuda {

class StepGraph {
public:
    explicit StepGraph(cudaStream_t stream) : stream_(stream) {}
    ~StepGraph();
    StepGraph(const StepGraph&) = delete;
    StepGraph& operator=(const StepGraph&) = delete;

    // Off for good: every begin() returns false (PURBO_NO_CUDA_GRAPHS, or repeated failures).
    void disable() { enabled_ = false; }
    bool enabled() const { return enabled_; }
    // Between begin() and end(): recording (capture) or checking (replay).
    bool open() const { return mode_ != Mode::kClosed; }
    bool capturing() const { return mode_ == Mode::kCapture; }

    // Opens a step of the given shape (steps of one shape are expected to issue the same
    // launches); false: graphs are off, run the ops as usual.
    bool begin(uint64_t shape);
    // Copies `bytes` of host data into the step arena; the device address the kernels read.
    Result<void*> stage(const void* host, size_t bytes);
    // One launch of an op: issued (and recorded) while capturing; compared with the recording
    // while replaying, and then not issued. `signature` holds every argument of the launch.
    template <class Launch, class... Values>
    Status launch(Launch&& issue, const Values&... signature) {
        static_assert((std::is_trivially_copyable_v<Values> && ...), "signatures are compared bytewise");
        static_assert((sizeof(Values) + ... + 0) <= kMaxSignature, "a launch signature outgrows kMaxSignature");
        if (mode_ == Mode::kClosed) return issue();
        std::byte bytes[kMaxSignature];
        size_t size = 0;
        ((std::memcpy(bytes + size, &signature, sizeof(Values)), size += sizeof(Values)), ...);
        if (mode_ == Mode::kReplay) {
            check({bytes, size});
            return Status::ok();
        }
        record({bytes, size});
        return issue();
    }
    // A scratch buffer must grow while capturing (which cannot allocate): the op fails, the
    // step runs again without the graph, and this failure does not count against graphs.
    void scratch_must_grow() { benign_failure_ = true; }
    // Closes the step. true: the step's work is on the stream; false: it did not run (the
    // caller issues the ops again outside a step).
    Result<bool> end(bool ops_ok);

    // Steps run from a replay, from a new recording, and steps that fell back (for tests and logs).
    struct Counts {
        int64_t replayed = 0, recorded = 0, fell_back = 0;
    };
    const Counts& counts() const { return counts_; }

private:
    enum class Mode { kClosed, kCapture, kReplay };
    // Two recording failures in a row (not counting a scratch buffer that had to grow) turn
    // graphs off: something in the step cannot be captured.
    static constexpr int kMaxFailures = 2;

    static constexpr size_t kMaxSignature = 512;
    void record(std::span<const std::byte> signature);
    void check(std::span<const std::byte> signature);
    Status grow_arena(size_t bytes);
    Status launch_graph();

    cudaStream_t stream_;
    bool enabled_ = true;
    Mode mode_ = Mode::kClosed;
    int failures_ = 0;
    bool benign_failure_ = false;
    Counts counts_;

    // The recording of one step shape: the signatures of its launches and stagings,
    // concatenated, where each one ends, and its instantiated graph.
    struct Recording {
        std::vector<std::byte> signatures;
        std::vector<size_t> ends;
        bool valid = false;
        cudaGraphExec_t exec = nullptr;
    };
    // Shapes kept at once; one more evicts the lowest key.
    static constexpr size_t kMaxShapes = 8;
    std::map<uint64_t, Recording> recordings_;
    Recording* current_ = nullptr;  // the open step's
    size_t cursor_ = 0;     // replay: signatures compared so far
    bool mismatch_ = false;  // replay: one differed or there were more than recorded

    // Step arena: host_ (pinned) -> device_ in one copy before the graph launches.
    void* host_ = nullptr;
    void* device_ = nullptr;
    size_t capacity_ = 0;
    size_t used_ = 0;
    size_t wanted_ = 0;               // a step outgrew the arena: its size for the next begin()
    cudaEvent_t arena_copied_ = nullptr;  // the last arena copy has read host_
};

}  // namespace purbo::cuda
