#include <cstdio>

int main(int argc, char** argv) {
    std::puts("purbo: no subcommands yet");
    return 0;
}
