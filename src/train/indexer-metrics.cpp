#include "train/indexer-metrics.h"

#include <algorithm>
#include <numeric>

namespace purbo {

void top_p_set(std::span<const float> probs, float p, std::vector<int32_t>& set) {
    set.resize(probs.size());
    std::iota(set.begin(), set.end(), 0);
    std::sort(set.begin(), set.end(), [&](int32_t a, int32_t b) {
        const float pa = probs[static_cast<size_t>(a)], pb = probs[static_cast<size_t>(b)];
        return pa > pb || (pa == pb && a < b);
    });
    double mass = 0;
    size_t keep = 0;
    while (keep < set.size() && mass < p) {
        const float x = probs[static_cast<size_t>(set[keep])];
        if (x <= 0.0f) break;  // sorted: the rest has no mass either
        mass += x;
        ++keep;
    }
    set.resize(keep);
}

TopPRecall top_p_recall(std::span<const float> teacher, std::span<const float> student, float p,
                        TopPScratch& scratch) {
    top_p_set(teacher, p, scratch.teacher_set);
    top_p_set(student, p, scratch.student_set);
    scratch.in_student.assign(student.size(), 0);
    TopPRecall r;
    for (int32_t i : scratch.student_set) {
        scratch.in_student[static_cast<size_t>(i)] = 1;
        r.teacher_mass += teacher[static_cast<size_t>(i)];
    }
    double set_mass = 0, covered_mass = 0;
    int64_t covered = 0;
    for (int32_t i : scratch.teacher_set) {
        const double t = teacher[static_cast<size_t>(i)];
        set_mass += t;
        if (scratch.in_student[static_cast<size_t>(i)]) {
            covered_mass += t;
            ++covered;
        }
    }
    r.teacher_size = static_cast<int64_t>(scratch.teacher_set.size());
    r.student_size = static_cast<int64_t>(scratch.student_set.size());
    // An all-zero teacher has an empty set, which any set covers.
    r.mass_recall = set_mass > 0 ? covered_mass / set_mass : 1.0;
    r.set_recall = r.teacher_size > 0
                       ? static_cast<double>(covered) / static_cast<double>(r.teacher_size)
                       : 1.0;
    return r;
}

void IndexerMetrics::add_recall(const TopPRecall& r) {
    mass_recall_sum += r.mass_recall;
    set_recall_sum += r.set_recall;
    teacher_mass_sum += r.teacher_mass;
    set_size_ratio_sum += r.teacher_size > 0 ? static_cast<double>(r.student_size) /
                                                   static_cast<double>(r.teacher_size)
                                             : 1.0;
    ++n_recall;
}

void IndexerMetrics::merge(const IndexerMetrics& o) {
    kl_sum += o.kl_sum;
    n_kl += o.n_kl;
    mass_recall_sum += o.mass_recall_sum;
    set_recall_sum += o.set_recall_sum;
    teacher_mass_sum += o.teacher_mass_sum;
    set_size_ratio_sum += o.set_size_ratio_sum;
    n_recall += o.n_recall;
}

}  // namespace purbo
