// The stage-1 indexer loss on a GPU (indexer-loss.h): packs one head's rows, runs
// cuda::IndexerLoss (backend/cuda/cuda-indexer-loss.h) and turns its per-row KL and recall
// samples into the same result as the CPU path.
#include "train/indexer-loss.h"

#include <algorithm>

#if defined(PURBO_HAVE_CUDA)
#include "backend/cuda/cuda-indexer-loss.h"
#endif

namespace purbo {

#if defined(PURBO_HAVE_CUDA)
namespace {

// Rows [first, first + count) of a view, contiguous.
std::vector<float> pack_rows(const RowsView& v, int64_t first, int64_t count) {
    std::vector<float> out(static_cast<size_t>(count * v.cols));
    for (int64_t i = 0; i < count; ++i)
        std::copy_n(v.row(first + i), v.cols, out.begin() + i * v.cols);
    return out;
}

// On the GPU, larger query blocks than the CPU's: the score GEMMs then run at full size.
constexpr int64_t kMinDeviceChunk = 1024;
// ...but the two (chunk, keys) score matrices stay under this many bytes.
constexpr int64_t kMaxScoreBytes = int64_t{1} << 30;

class IndexerLossCuda final : public IndexerLossDevice {
public:
    explicit IndexerLossCuda(std::unique_ptr<cuda::IndexerLoss> loss) : loss_(std::move(loss)) {}

    Result<IndexerLossResult> run(const HeadInputs& in, std::span<const float> wq, std::span<const float> wk,
                                  int rank, const IndexerLossOptions& options) override {
        PURBO_TRY(indexer_loss_check(in, wq.size(), wk.size(), rank));
        if (options.query_chunk <= 0)
            return error(StatusCode::kInvalidArgument, "indexer loss: query chunk {} must be positive",
                         options.query_chunk);
        const int d = in.q_pre.cols;
        const int64_t first = options.first_used_row(in.positions);
        const int64_t n_used = static_cast<int64_t>(in.positions.size()) - first;
        IndexerLossResult out;
        out.n_queries = n_used;
        if (n_used == 0) {
            out.dwq.assign(static_cast<size_t>(rank * d), 0.0f);
            out.dwk.assign(static_cast<size_t>(rank * d), 0.0f);
            return out;
        }
        const int64_t n_keys = int64_t{in.positions.back()} + 1;
        const std::vector<float> q_pre = pack_rows(in.q_pre, first, n_used);
        const std::vector<float> q_post = pack_rows(in.q_post, first, n_used);
        const std::vector<float> k_pre = pack_rows(in.k_pre, 0, n_keys);
        const std::vector<float> k_post = pack_rows(in.k_post, 0, n_keys);

        cuda::IndexerLossInputs dev;
        dev.q_pre = q_pre.data();
        dev.q_post = q_post.data();
        dev.k_pre = k_pre.data();
        dev.k_post = k_post.data();
        dev.positions = in.positions.data() + first;
        dev.wq = wq.data();
        dev.wk = wk.data();
        dev.nq = n_used;
        dev.nk = n_keys;
        dev.d = d;
        dev.r = rank;
        dev.scale = options.teacher_scale(d);
        dev.metric_stride = options.metric_stride;
        dev.chunk = std::max<int64_t>(options.query_chunk, kMinDeviceChunk);
        dev.chunk = std::max<int64_t>(1, std::min(dev.chunk, kMaxScoreBytes / (8 * n_keys)));
        cuda::IndexerLossOutputs res;
        PURBO_TRY(loss_->run(dev, res));

        // Sums in row order, as the CPU path: the total does not depend on the device's schedule.
        for (double kl : res.row_kl) out.metrics.kl_sum += kl;
        out.metrics.n_kl = n_used;
        out.loss = out.metrics.kl();
        size_t at = 0;
        for (int64_t u = 0; options.metric_stride > 0 && u < n_used; u += options.metric_stride) {
            const size_t len = static_cast<size_t>(in.positions[static_cast<size_t>(first + u)]) + 1;
            out.metrics.add_recall(top_p_recall({res.sample_t.data() + at, len}, {res.sample_s.data() + at, len},
                                                options.top_p, scratch_));
            at += len;
        }
        out.dwq = std::move(res.dwq);
        out.dwk = std::move(res.dwk);
        return out;
    }

private:
    std::unique_ptr<cuda::IndexerLoss> loss_;
    TopPScratch scratch_;
};

}  // namespace

Result<std::unique_ptr<IndexerLossDevice>> indexer_loss_device_cuda() {
    PURBO_ASSIGN_OR_RETURN(std::unique_ptr<cuda::IndexerLoss> loss, cuda::IndexerLoss::create());
    return std::unique_ptr<IndexerLossDevice>(new IndexerLossCuda(std::move(loss)));
}

#else

Result<std::unique_ptr<IndexerLossDevice>> indexer_loss_device_cuda() {
    return error(StatusCode::kUnsupported, "indexer loss on cuda: this build has no CUDA backend");
}

#endif

}  // namespace purbo
