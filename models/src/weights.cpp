#include "fedda/models_core/weights.h"

#include <cstring>
#include <sstream>

#include "fedda/common/crypto.h"
#include "model_io.h"
#include "networks.h"
#include "wire.h"

namespace fedda::models {
namespace fs = std::filesystem;

namespace {

Result<DType> wire_dtype(const torch::Tensor& t, const std::string& name) {
  switch (t.scalar_type()) {
    case torch::kFloat32: return DType::f32;
    case torch::kFloat16: return DType::f16;
    case torch::kInt64: return DType::i64;
    default: return make_error("tensor '" + name + "' has a type the wire format does not carry");
  }
}

torch::ScalarType torch_dtype(DType d) {
  switch (d) {
    case DType::f16: return torch::kFloat16;
    case DType::i64: return torch::kInt64;
    case DType::f32: break;
  }
  return torch::kFloat32;
}

}  // namespace

std::uint64_t mix(std::uint64_t a, std::uint64_t b) {
  std::uint64_t x = a ^ (b + 0x9e3779b97f4a7c15ULL + (a << 6) + (a >> 2));
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

std::vector<std::pair<std::string, torch::Tensor>> state_of(torch::nn::Module& module) {
  std::vector<std::pair<std::string, torch::Tensor>> state;
  for (const auto& p : module.named_parameters()) state.emplace_back(p.key(), p.value());
  for (const auto& b : module.named_buffers()) state.emplace_back(b.key(), b.value());
  return state;
}

WireTensor to_wire(const std::string& name, const torch::Tensor& tensor, DType dtype) {
  const auto t = tensor.detach().to(torch::kCPU).contiguous();
  WireTensor w;
  w.name = name;
  w.dtype = dtype;
  w.shape.assign(t.sizes().begin(), t.sizes().end());
  w.data.resize(t.numel() * t.element_size());
  std::memcpy(w.data.data(), t.data_ptr(), w.data.size());
  w.crc32 = crc32_of(w.data);
  return w;
}

Result<TensorSet> to_wire(torch::nn::Module& module) {
  TensorSet set;
  for (const auto& [name, tensor] : state_of(module)) {
    auto dtype = wire_dtype(tensor, name);
    if (!dtype) return dtype.error();
    set.tensors.push_back(to_wire(name, tensor, *dtype));
  }
  return set;
}

// Copies `set` into the module's parameters and buffers; error names the first mismatch.
Status from_wire(torch::nn::Module& module, const TensorSet& set) {
  auto reference = to_wire(module);
  if (!reference) return reference.error();
  if (auto st = check_same_layout(set, *reference); !st) return st;
  if (auto st = check_integrity(set); !st) return st;
  torch::NoGradGuard no_grad;
  const auto state = state_of(module);
  for (std::size_t i = 0; i < state.size(); ++i) {
    const auto& w = set.tensors[i];
    auto source = torch::from_blob(const_cast<std::uint8_t*>(w.data.data()), w.shape,
                                   torch::TensorOptions().dtype(torch_dtype(w.dtype)));
    state[i].second.copy_(source);
  }
  return Status::success();
}

Result<TensorSet> new_model_weights(const ModelSpec& spec, std::uint64_t seed) {
  if (auto st = validate(spec); !st) return st.error();
  torch::manual_seed(seed);
  UNet net(spec.unet);
  return to_wire(*net);
}

Result<TensorSet> new_discriminator_weights(const ModelSpec& spec, std::uint64_t seed) {
  torch::manual_seed(mix(seed, 0xd15c));
  Discriminator net(spec.unet.classes);
  return to_wire(*net);
}

std::vector<std::string> batch_norm_tensors(const ModelSpec& spec) {
  UNet net(spec.unet);
  std::vector<std::string> names;
  for (const auto& item : net->named_modules("", false)) {
    if (!item.value()->as<torch::nn::BatchNorm2dImpl>()) continue;
    for (const auto& p : item.value()->named_parameters(false)) names.push_back(item.key() + "." + p.key());
    for (const auto& b : item.value()->named_buffers(false)) names.push_back(item.key() + "." + b.key());
  }
  return names;
}

Result<StoredModel> read_model_weights(const fs::path& path) {
  auto m = load_model(path, torch::kCPU);
  if (!m) return m.error();
  auto weights = to_wire(*m->net);
  if (!weights) return make_error(path.string() + ": " + weights.error().message);
  return StoredModel{m->spec, std::move(*weights), m->quality};
}

Status write_model_weights(const fs::path& path, const ModelSpec& spec, const TensorSet& weights,
                           const std::string& quality) {
  if (auto st = validate(spec); !st) return st.error();
  UNet net(spec.unet);
  if (auto st = from_wire(*net, weights); !st) return make_error(path.string() + ": " + st.error().message);
  net->eval();
  return save_model(path, spec, net, quality);
}

// ---- DiscriminatorOptimizer ---------------------------------------------------------------

struct DiscriminatorOptimizer::Impl {
  Discriminator net{nullptr};
  std::unique_ptr<torch::optim::Adam> optimizer;
};

DiscriminatorOptimizer::DiscriminatorOptimizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DiscriminatorOptimizer::~DiscriminatorOptimizer() = default;

Result<std::unique_ptr<DiscriminatorOptimizer>> DiscriminatorOptimizer::create(const ModelSpec& spec,
                                                                               const TensorSet& weights,
                                                                               double learning_rate) {
  auto impl = std::make_unique<Impl>();
  impl->net = Discriminator(spec.unet.classes);
  if (auto st = from_wire(*impl->net, weights); !st) return make_error("discriminator: " + st.error().message);
  impl->optimizer = std::make_unique<torch::optim::Adam>(impl->net->parameters(),
                                                         torch::optim::AdamOptions(learning_rate));
  return std::unique_ptr<DiscriminatorOptimizer>(new DiscriminatorOptimizer(std::move(impl)));
}

Result<TensorSet> DiscriminatorOptimizer::step(const TensorSet& mean_grads, double learning_rate) {
  auto parameters = impl_->net->named_parameters();
  if (mean_grads.tensors.size() != parameters.size()) {
    return make_error("discriminator gradients: " + std::to_string(mean_grads.tensors.size()) + " tensors where " +
                      std::to_string(parameters.size()) + " are expected");
  }
  if (auto st = check_integrity(mean_grads); !st) return make_error("discriminator gradients: " + st.error().message);
  std::size_t i = 0;
  for (auto& p : parameters) {
    const auto& g = mean_grads.tensors[i++];
    if (g.name != p.key() || g.dtype != DType::f32 ||
        g.shape != std::vector<std::int64_t>(p.value().sizes().begin(), p.value().sizes().end())) {
      return make_error("discriminator gradients: tensor '" + g.name + "' does not match parameter '" + p.key() + "'");
    }
    p.value().mutable_grad() =
        torch::from_blob(const_cast<std::uint8_t*>(g.data.data()), g.shape, torch::kFloat32).clone();
  }
  for (auto& group : impl_->optimizer->param_groups()) {
    static_cast<torch::optim::AdamOptions&>(group.options()).lr(learning_rate);
  }
  impl_->optimizer->step();
  impl_->optimizer->zero_grad();
  return to_wire(*impl_->net);
}

Result<TensorSet> DiscriminatorOptimizer::weights() const { return to_wire(*impl_->net); }

Status DiscriminatorOptimizer::save(const fs::path& path, const std::string& storage_key, const std::string& context) const {
  std::ostringstream bytes;
  try {
    torch::serialize::OutputArchive archive, net, optimizer;
    impl_->net->save(net);
    impl_->optimizer->save(optimizer);
    archive.write("net", net);
    archive.write("optimizer", optimizer);
    archive.save_to(bytes);
  } catch (const std::exception& e) {
    return make_error(path.string() + ": cannot serialise the discriminator: " + e.what());
  }
  return crypto::write_sealed(path, bytes.str(), storage_key, context);
}

Status DiscriminatorOptimizer::load(const fs::path& path, const std::string& storage_key, const std::string& context) {
  auto bytes = crypto::read_sealed(path, storage_key, context);
  if (!bytes) return bytes.error();
  try {
    std::istringstream in(*bytes);
    torch::serialize::InputArchive archive, net, optimizer;
    archive.load_from(in);
    archive.read("net", net);
    archive.read("optimizer", optimizer);
    impl_->net->load(net);
    impl_->optimizer->load(optimizer);
  } catch (const std::exception& e) {
    return make_error(path.string() + ": not a discriminator state: " + e.what());
  }
  return Status::success();
}

}  // namespace fedda::models
