#include "train/stage1-checkpoint.h"

#include <charconv>
#include <cstring>
#include <map>
#include <utility>

#include "model/safetensors.h"

namespace purbo {
namespace {

constexpr const char* kFormat = "purbo.stage1-checkpoint.v1";

// Doubles as the shortest text that reads back to the same value.
std::string exact(double x) {
    return fmt::format("{}", x);
}

Tensor moment_tensor(const std::vector<float>& values, const Tensor& like) {
    Tensor t = tensor_cpu(
        DType::kF32, std::span<const int64_t>(like.shape.data(), static_cast<size_t>(like.ndim)));
    std::copy(values.begin(), values.end(), t.f32());
    return t;
}

class MetadataReader {
  public:
    MetadataReader(const std::map<std::string, std::string>& m, std::string source)
        : m_(m), source_(std::move(source)) {}

    bool has(const std::string& key) const { return m_.count(key) != 0; }
    Result<std::string> text(const std::string& key) const {
        const auto it = m_.find(key);
        if (it == m_.end())
            return error(StatusCode::kParseError, "{}: metadata '{}' missing", source_, key);
        return it->second;
    }
    template <class T>
    Status number(const std::string& key, T& out) const {
        PURBO_ASSIGN_OR_RETURN(const std::string s, text(key));
        const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
        if (ec != std::errc() || end != s.data() + s.size())
            return error(StatusCode::kParseError, "{}: metadata '{}': '{}' is not a number",
                         source_, key, s);
        return Status::ok();
    }

  private:
    const std::map<std::string, std::string>& m_;
    std::string source_;
};

// IndexerMetrics as "<prefix>.<field>" entries.
void put_metrics(std::map<std::string, std::string>& meta, const std::string& prefix,
                 const IndexerMetrics& m) {
    meta[prefix + ".kl_sum"] = exact(m.kl_sum);
    meta[prefix + ".n_kl"] = std::to_string(m.n_kl);
    meta[prefix + ".mass_recall_sum"] = exact(m.mass_recall_sum);
    meta[prefix + ".set_recall_sum"] = exact(m.set_recall_sum);
    meta[prefix + ".teacher_mass_sum"] = exact(m.teacher_mass_sum);
    meta[prefix + ".set_size_ratio_sum"] = exact(m.set_size_ratio_sum);
    meta[prefix + ".n_recall"] = std::to_string(m.n_recall);
}

Status get_metrics(const MetadataReader& meta, const std::string& prefix, IndexerMetrics& m) {
    PURBO_TRY(meta.number(prefix + ".kl_sum", m.kl_sum));
    PURBO_TRY(meta.number(prefix + ".n_kl", m.n_kl));
    PURBO_TRY(meta.number(prefix + ".mass_recall_sum", m.mass_recall_sum));
    PURBO_TRY(meta.number(prefix + ".set_recall_sum", m.set_recall_sum));
    PURBO_TRY(meta.number(prefix + ".teacher_mass_sum", m.teacher_mass_sum));
    PURBO_TRY(meta.number(prefix + ".set_size_ratio_sum", m.set_size_ratio_sum));
    return meta.number(prefix + ".n_recall", m.n_recall);
}

Result<std::vector<HeadId>> parse_heads(const std::string& s, const std::string& source) {
    std::vector<HeadId> heads;
    size_t pos = 0;
    while (pos < s.size()) {
        size_t end = s.find(',', pos);
        if (end == std::string::npos) end = s.size();
        const std::string item = s.substr(pos, end - pos);
        HeadId h;
        const size_t colon = item.find(':');
        const char* b = item.data();
        const char* e = b + item.size();
        if (colon == std::string::npos || std::from_chars(b, b + colon, h.layer).ptr != b + colon ||
            std::from_chars(b + colon + 1, e, h.head).ptr != e)
            return error(StatusCode::kParseError,
                         "{}: metadata 'retrieval': '{}' is not layer:head", source, item);
        heads.push_back(h);
        pos = end + 1;
    }
    return heads;
}

Result<Tensor> owned_f32(const SafetensorsFile& file, const char* name, const Tensor& like) {
    PURBO_ASSIGN_OR_RETURN(Tensor view, file.tensor(name));
    if (view.dtype != DType::kF32 || (!like.empty() && !same_shape(view, like)))
        return error(StatusCode::kParseError, "{}: tensor '{}' is {}, expected f32 {}",
                     file.source(), name, view.describe(),
                     like.empty() ? std::string("(n_retrieval, r, d)") : like.describe());
    Tensor t = tensor_cpu(
        DType::kF32, std::span<const int64_t>(view.shape.data(), static_cast<size_t>(view.ndim)),
        name);
    std::memcpy(t.data, view.data, view.nbytes());
    return t;
}

}  // namespace

Status stage1_checkpoint_save(const std::string& path, const Stage1Checkpoint& c) {
    const size_t n = static_cast<size_t>(c.wq.numel());
    PURBO_ASSERT(c.wk.numel() == c.wq.numel() && c.wq_moments.m.size() == n &&
                 c.wq_moments.v.size() == n && c.wk_moments.m.size() == n &&
                 c.wk_moments.v.size() == n);
    const std::vector<std::pair<std::string, Tensor>> tensors = {
        {"wq", c.wq},
        {"wk", c.wk},
        {"adamw.m.wq", moment_tensor(c.wq_moments.m, c.wq)},
        {"adamw.v.wq", moment_tensor(c.wq_moments.v, c.wq)},
        {"adamw.m.wk", moment_tensor(c.wk_moments.m, c.wk)},
        {"adamw.v.wk", moment_tensor(c.wk_moments.v, c.wk)},
    };
    std::string heads;
    for (const HeadId& h : c.retrieval)
        heads += fmt::format("{}{}:{}", heads.empty() ? "" : ",", h.layer, h.head);
    std::map<std::string, std::string> meta = {
        {"format", kFormat},
        {"step", std::to_string(c.step)},
        {"retrieval", heads},
        {"total_steps", std::to_string(c.total_steps)},
        {"warmup_steps", std::to_string(c.warmup_steps)},
        {"lr", exact(c.lr)},
    };
    put_metrics(meta, "initial", c.initial);
    if (c.has_eval_initial) put_metrics(meta, "eval_initial", c.eval_initial);
    return safetensors_write(path, tensors, meta);
}

Result<Stage1Checkpoint> stage1_checkpoint_load(const std::string& path) {
    PURBO_ASSIGN_OR_RETURN(std::shared_ptr<SafetensorsFile> file, SafetensorsFile::open(path));
    const MetadataReader meta(file->metadata(), path);
    PURBO_ASSIGN_OR_RETURN(const std::string format, meta.text("format"));
    if (format != kFormat)
        return error(StatusCode::kParseError, "{}: metadata 'format' is '{}', expected '{}'", path,
                     format, kFormat);
    Stage1Checkpoint c;
    PURBO_TRY(meta.number("step", c.step));
    PURBO_TRY(meta.number("total_steps", c.total_steps));
    PURBO_TRY(meta.number("warmup_steps", c.warmup_steps));
    PURBO_TRY(meta.number("lr", c.lr));
    PURBO_TRY(get_metrics(meta, "initial", c.initial));
    c.has_eval_initial = meta.has("eval_initial.n_kl");
    if (c.has_eval_initial) PURBO_TRY(get_metrics(meta, "eval_initial", c.eval_initial));
    PURBO_ASSIGN_OR_RETURN(const std::string heads, meta.text("retrieval"));
    PURBO_ASSIGN_OR_RETURN(c.retrieval, parse_heads(heads, path));

    PURBO_ASSIGN_OR_RETURN(c.wq, owned_f32(*file, "wq", Tensor{}));
    if (c.wq.ndim != 3 || c.wq.dim(0) != static_cast<int64_t>(c.retrieval.size()))
        return error(StatusCode::kParseError, "{}: tensor 'wq' is {}, expected ({}, r, d)", path,
                     c.wq.describe(), c.retrieval.size());
    PURBO_ASSIGN_OR_RETURN(c.wk, owned_f32(*file, "wk", c.wq));
    const auto moment = [&](const char* name, std::vector<float>& out) -> Status {
        PURBO_ASSIGN_OR_RETURN(Tensor t, owned_f32(*file, name, c.wq));
        out.assign(t.f32(), t.f32() + t.numel());
        return Status::ok();
    };
    PURBO_TRY(moment("adamw.m.wq", c.wq_moments.m));
    PURBO_TRY(moment("adamw.v.wq", c.wq_moments.v));
    PURBO_TRY(moment("adamw.m.wk", c.wk_moments.m));
    PURBO_TRY(moment("adamw.v.wk", c.wk_moments.v));
    return c;
}

}  // namespace purbo
