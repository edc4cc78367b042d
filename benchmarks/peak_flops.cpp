// fedda-peak: the floating-point rate these cores reach at all, measured: chains of independent
// fused multiply-adds in registers, no memory traffic, one thread per core. It is the ceiling
// benchmarks/roofline.py places a training step under (docs/performance.md), measured rather
// than taken from a data sheet, so that boost clocks and a hypervisor's share are in it.
//
//   fedda-peak [--threads 2] [--seconds 1]
//
// Prints one line per instruction set the processor has: "fp32 avx2-fma <GFLOP/s>",
// "fp32 avx512f ...", "bf16 avx512-bf16 ..." (VDPBF16PS: two bfloat16 products per fp32 lane).
// AMX tiles are not measured. Sets no thresholds.
#include <immintrin.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
constexpr int kChains = 12;  // independent accumulators: enough to hide an FMA's latency on two ports

// Each kernel runs `iterations` rounds of kChains independent operations and returns a value that
// depends on all of them, so that nothing is optimised away. Returns FLOP done through `flops`.
__attribute__((target("avx2,fma"))) float avx2_fma(long iterations, double& flops) {
  __m256 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm256_set1_ps(static_cast<float>(i) * 1e-3f);
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (long n = 0; n < iterations; ++n) {
#pragma GCC unroll 16
    for (int i = 0; i < kChains; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  }
  __m256 sum = acc[0];
  for (int i = 1; i < kChains; ++i) sum = _mm256_add_ps(sum, acc[i]);
  flops = static_cast<double>(iterations) * kChains * 8 * 2;
  float out[8];
  _mm256_storeu_ps(out, sum);
  return out[0];
}

__attribute__((target("avx512f"))) float avx512_fma(long iterations, double& flops) {
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i) * 1e-3f);
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (long n = 0; n < iterations; ++n) {
#pragma GCC unroll 16
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  }
  __m512 sum = acc[0];
  for (int i = 1; i < kChains; ++i) sum = _mm512_add_ps(sum, acc[i]);
  flops = static_cast<double>(iterations) * kChains * 16 * 2;
  return _mm512_reduce_add_ps(sum);
}

__attribute__((target("avx512f,avx512bf16"))) float avx512_bf16(long iterations, double& flops) {
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i) * 1e-3f);
  const __m512bh a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3f), _mm512_set1_ps(1e-3f));
  const __m512bh b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-4f), _mm512_set1_ps(1e-4f));
  for (long n = 0; n < iterations; ++n) {
#pragma GCC unroll 16
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
  }
  __m512 sum = acc[0];
  for (int i = 1; i < kChains; ++i) sum = _mm512_add_ps(sum, acc[i]);
  flops = static_cast<double>(iterations) * kChains * 16 * 2 * 2;  // 16 lanes, 2 products each, multiply + add
  return _mm512_reduce_add_ps(sum);
}

using Kernel = float (*)(long, double&);

// GFLOP/s of `threads` threads running `kernel` for about `seconds`.
double measure(Kernel kernel, int threads, double seconds) {
  // Calibrate on one thread: iterations per call that take about a tenth of the time.
  long iterations = 1 << 16;
  for (;;) {
    double f = 0;
    const auto t0 = Clock::now();
    volatile float sink = kernel(iterations, f);
    (void)sink;
    if (std::chrono::duration<double>(Clock::now() - t0).count() > seconds / 10 || iterations > (1L << 40)) break;
    iterations *= 2;
  }
  std::atomic<double> total{0};
  std::vector<std::thread> pool;
  const auto t0 = Clock::now();
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      double done = 0;
      while (std::chrono::duration<double>(Clock::now() - t0).count() < seconds) {
        double f = 0;
        volatile float sink = kernel(iterations, f);
        (void)sink;
        done += f;
      }
      double seen = total.load();
      while (!total.compare_exchange_weak(seen, seen + done)) {
      }
    });
  }
  for (auto& t : pool) t.join();
  return total.load() / std::chrono::duration<double>(Clock::now() - t0).count() / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2;
  double seconds = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if ((arg == "--threads" || arg == "--seconds") && i + 1 < argc) {
      const char* value = argv[++i];
      char* end = nullptr;
      const double v = std::strtod(value, &end);
      if (end == value || *end != '\0' || v <= 0) {
        std::fprintf(stderr, "fedda-peak: %s wants a positive number, not '%s'\n", arg.c_str(), value);
        return 2;
      }
      if (arg == "--threads") {
        threads = static_cast<int>(v);
      } else {
        seconds = v;
      }
    } else if (arg == "-h" || arg == "--help") {
      std::printf("fedda-peak [--threads N] [--seconds S]: the GFLOP/s N cores reach in register-only fused "
                  "multiply-adds, per instruction set this processor has (docs/performance.md)\n");
      return 0;
    } else {
      std::fprintf(stderr, "fedda-peak: unknown argument '%s' (see --help)\n", arg.c_str());
      return 2;
    }
  }
  __builtin_cpu_init();
  std::printf("threads %d, %.1f s each\n", threads, seconds);
  bool any = false;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    std::printf("fp32 avx2-fma %.1f\n", measure(avx2_fma, threads, seconds));
    any = true;
  }
  if (__builtin_cpu_supports("avx512f")) std::printf("fp32 avx512f %.1f\n", measure(avx512_fma, threads, seconds));
  if (__builtin_cpu_supports("avx512bf16")) std::printf("bf16 avx512-bf16 %.1f\n", measure(avx512_bf16, threads, seconds));
  if (!any) std::printf("no AVX2 + FMA: nothing measured\n");
  return 0;
}
