#include "model_io.h"

#include <mutex>
#include <sstream>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "fedda/common/files.h"
#include "weight_average.h"

namespace fedda::models {
namespace fs = std::filesystem;

namespace {

std::string read_spec_string(torch::serialize::InputArchive& archive) {
  c10::IValue value;
  archive.read("fedda.spec", value);
  return value.toStringRef();
}

}  // namespace

void reuse_freed_tensor_memory() {
#if defined(__GLIBC__)
  static std::once_flag once;
  std::call_once(once, [] {
    mallopt(M_MMAP_THRESHOLD, 32 << 20);   // glibc's largest allowed threshold
    mallopt(M_TRIM_THRESHOLD, 1 << 30);    // keep up to 1 GB of freed memory at the heap's top
  });
#endif
}

Result<torch::Device> parse_device(const std::string& device) {
  reuse_freed_tensor_memory();
  if (device == "cpu") return torch::Device(torch::kCPU);
  if (device == "cuda" || device.rfind("cuda:", 0) == 0) {
    if (!torch::cuda::is_available()) {
      return make_error("device '" + device + "' requested, but this LibTorch build has no CUDA or no GPU is visible");
    }
    return torch::Device(device);
  }
  return make_error("unknown device '" + device + "' (choose cpu or cuda)");
}

// Archives are serialised to memory first: LibTorch names the archive after the file it saves
// to, and a temporary name would make identical models differ byte for byte.
static Status write_archive(const fs::path& path, torch::serialize::OutputArchive& archive, const char* what) {
  std::ostringstream bytes;
  try {
    archive.save_to(bytes);
  } catch (const std::exception& e) {
    return make_error(path.string() + ": cannot serialise " + what + ": " + e.what());
  }
  return files::write_atomically(path, bytes.str());
}

// Module::load replaces tensors whatever their shape, so shapes are checked against a freshly
// built network of the declared architecture.
static Status check_shapes(const fs::path& path, const UNetSpec& spec, UNet& loaded) {
  UNet reference(spec);
  auto expected = reference->named_parameters();
  for (const auto& b : reference->named_buffers()) expected.insert(b.key(), b.value());
  auto actual = loaded->named_parameters();
  for (const auto& b : loaded->named_buffers()) actual.insert(b.key(), b.value());
  for (const auto& e : expected) {
    const auto* a = actual.find(e.key());
    if (!a || a->sizes() != e.value().sizes()) {
      return make_error(path.string() + ": weights do not match the architecture its spec declares (tensor '" +
                        e.key() + "')");
    }
  }
  return Status::success();
}

Status save_model(const fs::path& path, const ModelSpec& spec, UNet& net, const std::string& quality) {
  torch::serialize::OutputArchive archive;
  archive.write("fedda.spec", c10::IValue(to_json(spec)));
  if (!quality.empty()) archive.write("fedda.quality", c10::IValue(quality));
  net->to(torch::kCPU);
  net->save(archive);
  return write_archive(path, archive, "model");
}

Result<LoadedModel> load_model(const fs::path& path, const torch::Device& device) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return make_error(path.string() + ": no such model file");
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(path.string());
  } catch (const std::exception&) {
    return make_error(path.string() + ": not a fedda model file (corrupt, truncated or another format)");
  }
  std::string spec_json;
  try {
    spec_json = read_spec_string(archive);
  } catch (const std::exception&) {
    return make_error(path.string() + ": not a fedda model file (no spec inside)");
  }
  auto spec = model_spec_from_json(spec_json);
  if (!spec) return make_error(path.string() + ": " + spec.error().message);
  LoadedModel m;
  m.spec = *spec;
  if (c10::IValue quality; archive.try_read("fedda.quality", quality) && quality.isString()) {
    m.quality = quality.toStringRef();
  }
  m.net = UNet(spec->unet);
  try {
    m.net->load(archive);
  } catch (const std::exception& e) {
    return make_error(path.string() + ": weights do not match the architecture its spec declares (" +
                      std::string(e.what()).substr(0, 200) + ")");
  }
  if (auto st = check_shapes(path, spec->unet, m.net); !st) return st.error();
  m.net->to(device);
  m.net->eval();
  return m;
}

Status save_checkpoint(const fs::path& path, const ModelSpec& spec, UNet& net, torch::optim::Optimizer& optimizer,
                       int finished_epochs, Discriminator* discriminator,
                       torch::optim::Optimizer* discriminator_optimizer, const WeightAverage* average) {
  torch::serialize::OutputArchive archive;
  try {
    archive.write("fedda.spec", c10::IValue(to_json(spec)));
    archive.write("fedda.finished_epochs", c10::IValue(static_cast<int64_t>(finished_epochs)));
    torch::serialize::OutputArchive model, opt;
    net->save(model);
    optimizer.save(opt);
    archive.write("model", model);
    archive.write("optimizer", opt);
    if (discriminator && discriminator_optimizer) {
      torch::serialize::OutputArchive d, dopt;
      (*discriminator)->save(d);
      discriminator_optimizer->save(dopt);
      archive.write("discriminator", d);
      archive.write("discriminator_optimizer", dopt);
    }
    if (average) {
      torch::serialize::OutputArchive averaged;
      average->save(averaged);
      archive.write("averaged", averaged);
    }
  } catch (const std::exception& e) {
    return make_error(path.string() + ": cannot write checkpoint: " + e.what());
  }
  return write_archive(path, archive, "checkpoint");
}

Result<Checkpoint> load_checkpoint(const fs::path& path, UNet& net, torch::optim::Optimizer& optimizer,
                                   Discriminator* discriminator, torch::optim::Optimizer* discriminator_optimizer,
                                   WeightAverage* average) {
  try {
    torch::serialize::InputArchive archive;
    archive.load_from(path.string());
    c10::IValue epochs;
    archive.read("fedda.finished_epochs", epochs);
    torch::serialize::InputArchive model, opt;
    archive.read("model", model);
    archive.read("optimizer", opt);
    net->load(model);
    optimizer.load(opt);
    if (discriminator && discriminator_optimizer) {
      torch::serialize::InputArchive d, dopt;
      archive.read("discriminator", d);
      archive.read("discriminator_optimizer", dopt);
      (*discriminator)->load(d);
      discriminator_optimizer->load(dopt);
    }
    if (average) {
      torch::serialize::InputArchive averaged;
      archive.read("averaged", averaged);
      average->load(averaged);
    }
    Checkpoint c;
    c.finished_epochs = static_cast<int>(epochs.toInt());
    return c;
  } catch (const std::exception& e) {
    return make_error(path.string() + ": cannot resume from checkpoint (corrupt, or of another model): " +
                      std::string(e.what()).substr(0, 200));
  }
}

}  // namespace fedda::models
