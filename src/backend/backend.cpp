#include "backend/backend.h"

#include <string>
#include <vector>

namespace purbo {

std::unique_ptr<Backend> backend_create_cpu_ref(const BackendOptions& options);
std::unique_ptr<Backend> backend_create_cpu(const BackendOptions& options);
#if defined(PURBO_HAVE_CUDA)
Result<std::unique_ptr<Backend>> backend_create_cuda(const BackendOptions& options);
int cuda_device_count();  // 0 without a device or a driver
#endif

Result<std::unique_ptr<Backend>> backend_create(std::string_view name, const BackendOptions& options) {
    if (name == "cpu-ref") return backend_create_cpu_ref(options);
    if (name == "cpu") return backend_create_cpu(options);
    if (name == "cuda") {
#if defined(PURBO_HAVE_CUDA)
        return backend_create_cuda(options);
#else
        return error(StatusCode::kUnsupported, "backend 'cuda': this build has no CUDA backend (nvcc was not found)");
#endif
    }
    return error(StatusCode::kInvalidArgument, "unknown backend '{}' (expected cpu, cpu-ref or cuda)", name);
}

std::vector<std::string> backend_available() {
    std::vector<std::string> names = {"cpu-ref", "cpu"};
#if defined(PURBO_HAVE_CUDA)
    // Built with CUDA but usable only where the runtime sees a device: a machine without a
    // GPU (CI) does not list it, so its test cases skip instead of failing.
    if (cuda_device_count() > 0) names.push_back("cuda");
#endif
    return names;
}

}  // namespace purbo
