// purbo: one program, one subcommand per task.
#include <cstdio>
#include <cstring>

#include "common.h"

namespace {

void print_usage() {
    std::puts(
        "usage: purbo <command> [options]\n"
        "\n"
        "commands:\n"
        "  run       generate text from a prompt\n"
        "  inspect   print a model's architecture, tensors, tokenizer and template, or an adapter\n"
        "  bench     prompt-processing and generation speed (llama-bench style)\n"
        "  calibrate score every head, choose retrieval heads, write an adapter\n"
        "  train-indexer  stage 1: train an adapter's token indexer on the dense attention\n"
        "  eval      passkey retrieval, perplexity and KL vs dense of the dense and sparse models\n"
        "\n"
        "`purbo <command> --help` lists a command's options.");
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
        print_usage();
        return argc < 2 ? 1 : 0;
    }
    const char* cmd = argv[1];
    if (std::strcmp(cmd, "run") == 0) return purbo::cli::cmd_run(argc, argv);
    if (std::strcmp(cmd, "inspect") == 0) return purbo::cli::cmd_inspect(argc, argv);
    if (std::strcmp(cmd, "bench") == 0) return purbo::cli::cmd_bench(argc, argv);
    if (std::strcmp(cmd, "calibrate") == 0) return purbo::cli::cmd_calibrate(argc, argv);
    if (std::strcmp(cmd, "train-indexer") == 0) return purbo::cli::cmd_train_indexer(argc, argv);
    if (std::strcmp(cmd, "eval") == 0) return purbo::cli::cmd_eval(argc, argv);
    if (std::strcmp(cmd, "--version") == 0) {
        std::puts("purbo 0.1.0");
        return 0;
    }
    std::fprintf(stderr, "purbo: unknown command '%s'\n\n", cmd);
    print_usage();
    return 1;
}
