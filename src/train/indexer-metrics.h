// How well an indexer's distribution finds the tokens the dense attention uses (method.md
// sections 4 and 6): decode keeps the student's top-p set, so what matters is how much of the
// teacher's top-p set that set covers.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace purbo {

// The top-p set of a distribution over n tokens: indices by descending probability (ties: lower
// index first), the shortest prefix whose mass reaches p. When rounding keeps the total below p,
// every token with non-zero mass.
void top_p_set(std::span<const float> probs, float p, std::vector<int32_t>& set);

// One query's comparison of the teacher's top-p set T and the student's top-p set S.
struct TopPRecall {
    double mass_recall = 0;    // teacher mass of T that S covers: sum_{T and S} t / sum_T t
    double set_recall = 0;     // |T and S| / |T|
    double teacher_mass = 0;   // teacher mass that S keeps: sum_S t (what sparse attention sees)
    int64_t teacher_size = 0;  // |T|
    int64_t student_size = 0;  // |S|
};

// Scratch buffers of top_p_recall, reused across queries.
struct TopPScratch {
    std::vector<int32_t> teacher_set;
    std::vector<int32_t> student_set;
    std::vector<uint8_t> in_student;
};

// teacher, student: (n,) probabilities over the same keys.
TopPRecall top_p_recall(std::span<const float> teacher, std::span<const float> student, float p,
                        TopPScratch& scratch);

// Sums of per-query measures (per head, then over heads); means on demand.
struct IndexerMetrics {
    double kl_sum = 0;
    int64_t n_kl = 0;
    double mass_recall_sum = 0;
    double set_recall_sum = 0;
    double teacher_mass_sum = 0;
    double set_size_ratio_sum = 0;  // |S| / |T|
    int64_t n_recall = 0;

    void add_recall(const TopPRecall& r);
    void merge(const IndexerMetrics& other);
    double kl() const { return n_kl == 0 ? 0.0 : kl_sum / static_cast<double>(n_kl); }
    double mass_recall() const { return mean(mass_recall_sum); }
    double set_recall() const { return mean(set_recall_sum); }
    double teacher_mass() const { return mean(teacher_mass_sum); }
    double set_size_ratio() const { return mean(set_size_ratio_sum); }

  private:
    double mean(double sum) const {
        return n_recall == 0 ? 0.0 : sum / static_cast<double>(n_recall);
    }
};

}  // namespace purbo
