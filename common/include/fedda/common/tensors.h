#pragma once
// Tensors as they cross the network and the disk: named, shaped, typed raw buffers in
// little-endian byte order with a CRC-32 each, never pickles. Free of LibTorch; the models
// library converts to and from its modules.
//
// A TensorSet is a model's state (parameters and buffers) or its gradients, in a fixed order.
// Values are plain data: copy, move and compare freely; not synchronised.

#include <cstdint>
#include <string>
#include <vector>

#include "fedda/common/result.h"

namespace fedda {

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "fedda's wire format is little-endian and this build assumes a little-endian host"
#endif

enum class DType : std::uint8_t { f32 = 1, f16 = 2, i64 = 3 };

const char* dtype_name(DType dtype);
std::size_t dtype_size(DType dtype);  // 0 for a value that is not a DType

struct WireTensor {
  std::string name;                 // e.g. "down.0.conv1.weight"
  DType dtype = DType::f32;
  std::vector<std::int64_t> shape;
  std::vector<std::uint8_t> data;   // element_count(shape) * dtype_size(dtype) bytes
  std::uint32_t crc32 = 0;          // of `data`

  std::int64_t elements() const;
};

struct TensorSet {
  std::vector<WireTensor> tensors;

  std::size_t bytes() const;  // payload bytes
  const WireTensor* find(const std::string& name) const;
};

std::uint32_t crc32_of(const std::vector<std::uint8_t>& data);
std::uint32_t crc32_of(const std::string& data);

// Builds a float32 tensor from values (its CRC filled in).
WireTensor make_f32(std::string name, std::vector<std::int64_t> shape, const std::vector<float>& values);
// Float32 values of an f32, f16 or i64 tensor; empty when its bytes do not match its shape.
std::vector<float> to_f32(const WireTensor& tensor);
// Recomputes every CRC (after editing data in place).
void seal(TensorSet& set);
// Half-precision transfer: float32 tensors as float16 (rounded to nearest, ties to even; beyond
// the float16 range they become infinite) and back; other dtypes unchanged; CRCs filled in.
TensorSet to_half(const TensorSet& set);
TensorSet to_full(const TensorSet& set);

// Error naming the tensor unless its dtype is known and its bytes are exactly what its shape
// declares (nothing is allocated: the check a forged shape must pass before any conversion).
Status check_bytes(const WireTensor& tensor);
// Error names the first tensor whose dtype, shape, byte count or CRC is inconsistent.
Status check_integrity(const TensorSet& set);
// What a set from the wire must pass before anything is done with it: the names, shapes and
// dtypes of `layout` in its order (a float16 tensor may stand for a float32 one: a site that
// sent at half precision), and consistent bytes and CRCs. The error names the first tensor at fault.
Status check_matches(const TensorSet& set, const TensorSet& layout);
// Error unless `set` has exactly the names, dtypes and shapes of `reference`, in its order.
Status check_same_layout(const TensorSet& set, const TensorSet& reference);
// Error naming the first float tensor (float32 or float16) that holds a NaN or an infinity.
Status check_finite(const TensorSet& set);
// L2 distance between two sets of one layout over their float tensors (a float16 tensor counts
// as its float32 twin); integer tensors (counters) are left out. Infinite when layouts differ.
double l2_distance(const TensorSet& a, const TensorSet& b);

// Sample-weighted running average of TensorSets of one layout (FedAvg). Memory is one
// double per element however many sets are added; each set may be freed once added.
// Integer tensors (batch-norm counters) are averaged and rounded. Not thread-safe.
class RunningAverage {
 public:
  explicit RunningAverage(TensorSet layout);
  // Error (and nothing added) when the layout differs or the weight is not positive. A float16
  // tensor counts as its float32 twin (a site that sent its update at half precision).
  Status add(const TensorSet& set, double weight);
  int count() const { return count_; }
  const TensorSet& layout() const { return layout_; }  // names, dtypes and shapes; no data
  double total_weight() const { return total_weight_; }
  // The average, in the layout's dtypes; error when nothing was added.
  Result<TensorSet> average() const;

 private:
  TensorSet layout_;  // names, dtypes, shapes (data dropped)
  std::vector<std::vector<double>> sums_;
  double total_weight_ = 0;
  int count_ = 0;
};

}  // namespace fedda
