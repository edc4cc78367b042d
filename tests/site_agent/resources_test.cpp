// What a site's agent says of its machine at each hello (resources.h): read from this machine,
// and GPUs read from a driver folder laid out as the NVIDIA driver's /proc/driver/nvidia/gpus.
#include "resources.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <thread>

#include "support/test_support.h"

namespace fedda::site_agent {
namespace {

TEST(Resources, ThisMachinesCoresMemoryAndCacheSpaceAreRead) {
  fedda::testing::ScratchDir dir;
  const auto r = site_resources(dir.path() / "cache" / "not-yet-made", "cpu", "float32");
  EXPECT_GE(r.cores, 1);
  EXPECT_LE(r.cores, static_cast<int>(std::thread::hardware_concurrency()));
  EXPECT_EQ(r.memory_bytes, static_cast<std::int64_t>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGE_SIZE));
  // A cache folder not made yet is measured on the nearest folder that exists.
  EXPECT_EQ(r.cache_free_bytes, static_cast<std::int64_t>(std::filesystem::space(dir.path()).available));
  EXPECT_EQ(r.precision, "float32");
  EXPECT_EQ(site_resources(dir.path(), "cpu", "bfloat16").precision, "bfloat16");
  const auto automatic = site_resources(dir.path(), "cpu", "auto").precision;
  EXPECT_TRUE(automatic == "float32" || automatic == "bfloat16") << automatic;
}

TEST(Resources, GpusAreNamedByTheDriversModelLinesInFolderOrder) {
  fedda::testing::ScratchDir dir;
  const auto gpu = [&](const std::string& bus, const std::string& text) {
    std::filesystem::create_directories(dir.path() / bus);
    std::ofstream(dir.path() / bus / "information") << text;
  };
  gpu("0000:41:00.0", "Model: \t NVIDIA A100-SXM4-80GB \nIRQ:   140\nGPU UUID: GPU-1\n");
  gpu("0000:01:00.0", "IRQ:   139\nModel:           NVIDIA H200\nBus Type:  PCIe\n");
  gpu("0000:81:00.0", "IRQ:   141\n");  // no model line: not listed
  EXPECT_EQ(nvidia_gpus(dir.path()), (std::vector<std::string>{"NVIDIA H200", "NVIDIA A100-SXM4-80GB"}));
  EXPECT_TRUE(nvidia_gpus(dir.path() / "absent").empty());
}

}  // namespace
}  // namespace fedda::site_agent
