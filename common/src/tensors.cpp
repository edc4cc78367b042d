#include "fedda/common/tensors.h"

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>

namespace fedda {

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f32: return "float32";
    case DType::f16: return "float16";
    case DType::i64: return "int64";
  }
  return "unknown";
}

std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::f32: return 4;
    case DType::f16: return 2;
    case DType::i64: return 8;
  }
  return 0;
}

std::int64_t WireTensor::elements() const {
  std::int64_t n = 1;
  for (const auto d : shape) {
    if (d < 0 || (d > 0 && n > (std::int64_t{1} << 40) / d)) return -1;
    n *= d;
  }
  return n;
}

std::size_t TensorSet::bytes() const {
  std::size_t n = 0;
  for (const auto& t : tensors) n += t.data.size();
  return n;
}

const WireTensor* TensorSet::find(const std::string& name) const {
  for (const auto& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

std::uint32_t crc32_of(const std::vector<std::uint8_t>& data) {
  uLong crc = crc32(0L, Z_NULL, 0);
  std::size_t offset = 0;
  while (offset < data.size()) {  // zlib takes 32-bit lengths
    const auto chunk = static_cast<uInt>(std::min<std::size_t>(data.size() - offset, 1u << 30));
    crc = crc32(crc, data.data() + offset, chunk);
    offset += chunk;
  }
  return static_cast<std::uint32_t>(crc);
}

std::uint32_t crc32_of(const std::string& data) {
  uLong crc = crc32(0L, Z_NULL, 0);
  std::size_t offset = 0;
  while (offset < data.size()) {
    const auto chunk = static_cast<uInt>(std::min<std::size_t>(data.size() - offset, 1u << 30));
    crc = crc32(crc, reinterpret_cast<const Bytef*>(data.data()) + offset, chunk);
    offset += chunk;
  }
  return static_cast<std::uint32_t>(crc);
}

WireTensor make_f32(std::string name, std::vector<std::int64_t> shape, const std::vector<float>& values) {
  WireTensor t;
  t.name = std::move(name);
  t.dtype = DType::f32;
  t.shape = std::move(shape);
  t.data.resize(values.size() * sizeof(float));
  std::memcpy(t.data.data(), values.data(), t.data.size());
  t.crc32 = crc32_of(t.data);
  return t;
}

namespace {

float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000) << 16, exponent = (h >> 10) & 0x1f,
                      mantissa = h & 0x3ff;
  if (exponent == 0) {  // zero or subnormal: mantissa units of 2^-24, exact in a float
    const float value = static_cast<float>(mantissa) * (1.0f / 16777216.0f);
    return sign ? -value : value;
  }
  // Normal numbers rebias the exponent; infinity and NaN keep an all-ones exponent.
  const std::uint32_t bits = sign | ((exponent == 31 ? 255 : exponent - 15 + 127) << 23) | (mantissa << 13);
  float value;
  std::memcpy(&value, &bits, 4);
  return value;
}

// Written out rather than taken from a library: common stays free of LibTorch, and the
// conversion is these few lines of IEEE 754 bit arithmetic (tested against every float16).
std::uint16_t float_to_half(float value) {
  std::uint32_t x;
  std::memcpy(&x, &value, 4);
  const auto sign = static_cast<std::uint16_t>((x >> 16) & 0x8000);
  const std::uint32_t magnitude = x & 0x7fffffff;
  if (magnitude > 0x7f800000) return sign | 0x7e00;        // NaN
  if (magnitude >= 0x47800000) return sign | 0x7c00;       // 65536 and beyond (and infinity)
  if (magnitude < 0x38800000) {                            // below 2^-14: a float16 subnormal
    float m;
    std::memcpy(&m, &magnitude, 4);
    return sign | static_cast<std::uint16_t>(std::nearbyint(m * 16777216.0f));  // units of 2^-24
  }
  std::uint32_t h = ((((magnitude >> 23) - 127 + 15)) << 10) | ((magnitude >> 13) & 0x3ff);
  const std::uint32_t rest = magnitude & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) ++h;  // a carry into the exponent is right
  return sign | static_cast<std::uint16_t>(h);
}

WireTensor converted(const WireTensor& t, DType dtype) {
  WireTensor out;
  out.name = t.name;
  out.dtype = dtype;
  out.shape = t.shape;
  const auto values = to_f32(t);
  out.data.resize(values.size() * dtype_size(dtype));
  if (dtype == DType::f32) {
    std::memcpy(out.data.data(), values.data(), out.data.size());
  } else {
    for (std::size_t i = 0; i < values.size(); ++i) {
      const std::uint16_t h = float_to_half(values[i]);
      std::memcpy(out.data.data() + 2 * i, &h, 2);
    }
  }
  out.crc32 = crc32_of(out.data);
  return out;
}

}  // namespace

TensorSet to_half(const TensorSet& set) {
  TensorSet out;
  for (const auto& t : set.tensors) out.tensors.push_back(t.dtype == DType::f32 ? converted(t, DType::f16) : t);
  return out;
}

TensorSet to_full(const TensorSet& set) {
  TensorSet out;
  for (const auto& t : set.tensors) out.tensors.push_back(t.dtype == DType::f16 ? converted(t, DType::f32) : t);
  return out;
}

std::vector<float> to_f32(const WireTensor& t) {
  // Sized by the bytes that are there, never by the declared shape alone: a forged shape with no
  // data behind it costs nothing.
  const auto n = static_cast<std::size_t>(std::max<std::int64_t>(0, t.elements()));
  const std::size_t size = dtype_size(t.dtype);
  if (size == 0 || t.elements() < 0 || t.data.size() / size != n || t.data.size() % size != 0) return {};
  std::vector<float> values(n);
  if (t.dtype == DType::f32 && t.data.size() == n * 4) {
    std::memcpy(values.data(), t.data.data(), t.data.size());
  } else if (t.dtype == DType::f16 && t.data.size() == n * 2) {
    for (std::size_t i = 0; i < n; ++i) {
      std::uint16_t h;
      std::memcpy(&h, t.data.data() + 2 * i, 2);
      values[i] = half_to_float(h);
    }
  } else if (t.dtype == DType::i64 && t.data.size() == n * 8) {
    for (std::size_t i = 0; i < n; ++i) {
      std::int64_t v;
      std::memcpy(&v, t.data.data() + 8 * i, 8);
      values[i] = static_cast<float>(v);
    }
  }
  return values;
}

Status check_finite(const TensorSet& set) {
  for (const auto& t : set.tensors) {
    if (t.dtype != DType::f32 && t.dtype != DType::f16) continue;
    if (auto st = check_bytes(t); !st) return st;
    for (const float v : to_f32(t)) {
      if (!std::isfinite(v)) return make_error("tensor '" + t.name + "' holds " + (std::isnan(v) ? "NaN" : "an infinity"));
    }
  }
  return Status::success();
}

double l2_distance(const TensorSet& a, const TensorSet& b) {
  if (a.tensors.size() != b.tensors.size()) return INFINITY;
  double sum = 0;
  for (std::size_t i = 0; i < a.tensors.size(); ++i) {
    const auto& x = a.tensors[i];
    const auto& y = b.tensors[i];
    const bool floats = (x.dtype == DType::f32 || x.dtype == DType::f16) && (y.dtype == DType::f32 || y.dtype == DType::f16);
    if (x.name != y.name || x.shape != y.shape) return INFINITY;
    if (!floats) continue;
    const auto u = to_f32(x), v = to_f32(y);
    if (u.size() != v.size()) return INFINITY;
    for (std::size_t k = 0; k < u.size(); ++k) {
      const double d = static_cast<double>(u[k]) - static_cast<double>(v[k]);
      sum += d * d;
    }
  }
  return std::sqrt(sum);
}

void seal(TensorSet& set) {
  for (auto& t : set.tensors) t.crc32 = crc32_of(t.data);
}

Status check_bytes(const WireTensor& t) {
  const std::size_t size = dtype_size(t.dtype);
  if (size == 0) return make_error("tensor '" + t.name + "': unknown dtype " + std::to_string(int(t.dtype)));
  const auto n = t.elements();
  if (n < 0) return make_error("tensor '" + t.name + "': invalid shape");
  if (t.data.size() % size != 0 || t.data.size() / size != static_cast<std::size_t>(n)) {
    return make_error("tensor '" + t.name + "': " + std::to_string(t.data.size()) + " bytes for " + std::to_string(n) + " " +
                      dtype_name(t.dtype) + " elements");
  }
  return Status::success();
}

Status check_integrity(const TensorSet& set) {
  for (const auto& t : set.tensors) {
    if (auto st = check_bytes(t); !st) return st;
    if (crc32_of(t.data) != t.crc32) return make_error("tensor '" + t.name + "': checksum mismatch");
  }
  return Status::success();
}

namespace {
std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}
}  // namespace

Status check_same_layout(const TensorSet& set, const TensorSet& reference) {
  if (set.tensors.size() != reference.tensors.size()) {
    return make_error(std::to_string(set.tensors.size()) + " tensors where " +
                      std::to_string(reference.tensors.size()) + " are expected");
  }
  for (std::size_t i = 0; i < set.tensors.size(); ++i) {
    const auto& a = set.tensors[i];
    const auto& b = reference.tensors[i];
    if (a.name != b.name) return make_error("tensor #" + std::to_string(i) + " is '" + a.name + "', expected '" + b.name + "'");
    if (a.dtype != b.dtype) {
      return make_error("tensor '" + a.name + "' is " + dtype_name(a.dtype) + ", expected " + dtype_name(b.dtype));
    }
    if (a.shape != b.shape) {
      return make_error("tensor '" + a.name + "' has shape " + shape_text(a.shape) + ", expected " + shape_text(b.shape));
    }
  }
  return Status::success();
}

RunningAverage::RunningAverage(TensorSet layout) : layout_(std::move(layout)) {
  sums_.reserve(layout_.tensors.size());
  for (auto& t : layout_.tensors) {
    sums_.emplace_back(static_cast<std::size_t>(std::max<std::int64_t>(0, t.elements())), 0.0);
    t.data.clear();
    t.data.shrink_to_fit();
  }
}

Status check_matches(const TensorSet& set, const TensorSet& layout) {
  // A float16 tensor counts as its float32 twin: the layout is compared with the set's names,
  // shapes and dtypes read that way (no data copied).
  TensorSet as_sent;
  as_sent.tensors.reserve(std::min(set.tensors.size(), layout.tensors.size() + 1));
  for (const auto& t : set.tensors) {
    if (as_sent.tensors.size() > layout.tensors.size()) break;  // too many either way
    const bool half_of_float = t.dtype == DType::f16 && as_sent.tensors.size() < layout.tensors.size() &&
                               layout.tensors[as_sent.tensors.size()].dtype == DType::f32;
    as_sent.tensors.push_back({t.name, half_of_float ? DType::f32 : t.dtype, t.shape, {}, 0});
  }
  if (set.tensors.size() != layout.tensors.size()) {
    return make_error(std::to_string(set.tensors.size()) + " tensors where " + std::to_string(layout.tensors.size()) +
                      " are expected");
  }
  if (auto st = check_same_layout(as_sent, layout); !st) return st;
  return check_integrity(set);
}

Status RunningAverage::add(const TensorSet& set, double weight) {
  if (!(weight > 0) || !std::isfinite(weight)) return make_error("weight must be positive");
  // The sums below widen float16 themselves.
  if (auto st = check_matches(set, layout_); !st) return st;
  for (std::size_t i = 0; i < set.tensors.size(); ++i) {
    const auto& t = set.tensors[i];
    auto& sum = sums_[i];
    if (t.dtype == DType::f32) {
      const float* v = reinterpret_cast<const float*>(t.data.data());
      for (std::size_t k = 0; k < sum.size(); ++k) sum[k] += weight * v[k];
    } else if (t.dtype == DType::i64) {
      for (std::size_t k = 0; k < sum.size(); ++k) {
        std::int64_t v;
        std::memcpy(&v, t.data.data() + 8 * k, 8);
        sum[k] += weight * static_cast<double>(v);
      }
    } else {
      const auto v = to_f32(t);
      for (std::size_t k = 0; k < sum.size(); ++k) sum[k] += weight * v[k];
    }
  }
  total_weight_ += weight;
  ++count_;
  return Status::success();
}

Result<TensorSet> RunningAverage::average() const {
  if (count_ == 0) return make_error("nothing to average");
  TensorSet out = layout_;
  for (std::size_t i = 0; i < out.tensors.size(); ++i) {
    auto& t = out.tensors[i];
    const auto& sum = sums_[i];
    if (t.dtype == DType::i64) {
      t.data.resize(sum.size() * 8);
      for (std::size_t k = 0; k < sum.size(); ++k) {
        const auto v = static_cast<std::int64_t>(std::llround(sum[k] / total_weight_));
        std::memcpy(t.data.data() + 8 * k, &v, 8);
      }
    } else {
      // Averages are returned as float32 whatever the inputs' precision.
      t.dtype = DType::f32;
      t.data.resize(sum.size() * 4);
      float* v = reinterpret_cast<float*>(t.data.data());
      for (std::size_t k = 0; k < sum.size(); ++k) v[k] = static_cast<float>(sum[k] / total_weight_);
    }
    t.crc32 = crc32_of(t.data);
  }
  return out;
}

}  // namespace fedda
