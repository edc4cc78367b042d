#pragma once
// The arithmetic a site trains and infers in, chosen at run time (torch-free).
//
//   float32   everything in float32 (the default wherever bfloat16 has no units)
//   bfloat16  LibTorch's autocast around the U-Net's forward pass: convolutions and matrix
//             products in bfloat16, with float32 master weights, Adam moments, batch-norm
//             statistics, logits and losses; the backward pass follows the forward's types.
//   auto      bfloat16 where the processor has bfloat16 units (the avx512_bf16 or amx_bf16 flags)
//             or on CUDA, float32 otherwise.
//
// Whatever a site computes in, models and updates stay float32 (or float16 on the wire with
// transfer_precision): sites with different hardware federate together.
//
// Channels-last memory goes with bfloat16 (oneDNN's bfloat16 kernels are NHWC) and with AVX-512
// in float32, where it was measured to pay (1.3x); on AVX2 it costs in training and pays in
// inference, so a network that only infers takes it there too (for_inference).

#include <set>
#include <string>
#include <vector>

#include "fedda/common/result.h"

namespace fedda::models {

struct PrecisionChoice {
  bool bfloat16 = false;
  bool channels_last = false;
  std::string reason;  // why, for the log and rounds.jsonl

  std::string name() const { return bfloat16 ? "bfloat16" : "float32"; }
};

// "auto", "float32", "bfloat16": what a site, a job or a command line may ask for.
const std::vector<std::string>& precision_names();
bool is_precision_name(const std::string& name);

// The processor's feature flags (/proc/cpuinfo "flags"), or, when FEDDA_CPU_FLAGS is set, those
// (space-separated): to see what `auto` would pick on another machine, and for tests.
std::set<std::string> cpu_flags();

// "auto" | "float32" | "bfloat16" on `device` ("cpu", "cuda", "cuda:N") with `flags`; error names
// the value. Pure: tests give it any flags.
Result<PrecisionChoice> choose_precision(const std::string& requested, const std::string& device,
                                         const std::set<std::string>& flags);
// The same with this machine's flags.
Result<PrecisionChoice> choose_precision(const std::string& requested, const std::string& device);

// The layout of a network that only infers (soft labels, segmentation, scoring) under `trained`:
// channels-last on every CPU. On AVX2 training pays NCHW, but inference pays channels-last
// (1.12x in fedda, 1.19x in Python on 2 Zen 3 cores: docs/performance.md). CUDA unchanged.
PrecisionChoice for_inference(PrecisionChoice trained, const std::string& device);

// "precision" as a job or site.yaml gives it: the job's explicit choice wins, then the site's,
// then auto.
std::string precision_request(const std::string& job, const std::string& site);

// The processor's model name and its vector ISA for reports ("Intel(R) Xeon(R) ... | avx2 fma").
std::string cpu_description();

}  // namespace fedda::models
