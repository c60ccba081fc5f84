// Helpers shared by the tests: fixture paths, the default model, tolerances.
#pragma once

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace purbo::test {

// tests/fixtures/<relative>
std::string fixture_path(const std::string& relative);
// A fresh empty directory under the build tree for files a test writes.
std::string temp_dir(const std::string& test_name);
// The default model (models/SmolLM2-135M-Instruct.Q4_1.gguf or $PURBO_MODEL) if present.
std::optional<std::string> default_model_path();

// Normalised mean squared error: sum((a-b)^2) / sum(b^2), b = reference.
double nmse(std::span<const float> a, std::span<const float> reference);
double max_abs_diff(std::span<const float> a, std::span<const float> b);

// Uniform random floats in [-amplitude, amplitude].
std::vector<float> random_floats(std::mt19937& rng, int64_t count, float amplitude = 1.0f);
// A host f32 tensor holding `values` (their count must match the shape).
Tensor host_f32(std::initializer_list<int64_t> shape, const std::vector<float>& values);
// A JSON file; a failed read or parse is a test failure and gives null.
nlohmann::json load_json(const std::string& path);

// A tiny Llama checkpoint (3 layers x 4 query heads, 2 KV heads, d 16; fixture
// hf/llama-linear-oldspelling) with a byte-level tokenizer of one token per byte and no merges,
// written to a fresh temp_dir(test_name): small enough for the 320-row vocabulary, so that
// program tests can run whole commands on text in seconds. Its config allows 2048 positions
// (RoPE works at any position; the fixture says 256 only to keep its references small).
std::string tiny_byte_model(const std::string& test_name);

// Runs the built purbo program with `args` (shell syntax) and collects what it prints.
struct ProgramResult {
    int status = -1;     // exit code; 128 + signal when killed by one
    std::string output;  // stdout, and stderr too when asked
};
ProgramResult run_purbo(const std::string& args, bool with_stderr = true);

}  // namespace purbo::test

// Skips the current test (reported as skipped by ctest) when the default model is absent.
#define PURBO_REQUIRE_DEFAULT_MODEL(var)                                                     \
    auto var##_opt = ::purbo::test::default_model_path();                                    \
    if (!var##_opt) GTEST_SKIP() << "default model not present (run scripts/fetch-model.sh)"; \
    const std::string var = *var##_opt
