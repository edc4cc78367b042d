#include "admission.h"

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "fedda/common/crypto.h"

namespace fedda::coordinator {

Admission::Admission(const kit::CoordinatorKit& kit, std::shared_ptr<spdlog::logger> log)
    : sites_(kit.sites), operators_(kit.operators), log_(std::move(log)) {}

Result<std::string> Admission::check(const std::string& domain, const std::string& key) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (domain == kDataDomain) {
    const auto it = sites_.find(key);
    if (it == sites_.end()) {
      if (operators_.count(key)) return make_error("operator key of '" + operators_.at(key) + "' on the sites' endpoint");
      return make_error("CURVE key " + key + " is not provisioned in this consortium");
    }
    if (revoked_.count(it->second)) return make_error("site '" + it->second + "' is revoked");
    return it->second;
  }
  if (domain == kAdminDomain) {
    const auto it = operators_.find(key);
    if (it == operators_.end()) {
      if (sites_.count(key)) return make_error("site key of '" + sites_.at(key) + "' on the admin endpoint");
      return make_error("CURVE key " + key + " is not an operator of this consortium");
    }
    if (revoked_operators_.count(it->second)) return make_error("operator '" + it->second + "' is revoked");
    return it->second;
  }
  return make_error("unknown ZAP domain '" + domain + "'");
}

void Admission::admit_site(const std::string& key, const std::string& site) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto it = sites_.begin(); it != sites_.end();) {  // a site's new kit replaces its old key
    it = it->second == site && it->first != key ? sites_.erase(it) : std::next(it);
  }
  sites_[key] = site;
  revoked_.erase(site);
}

void Admission::revoke(const std::string& site) {
  std::lock_guard<std::mutex> lock(mutex_);
  revoked_.insert(site);
}

void Admission::unrevoke(const std::string& site) {
  std::lock_guard<std::mutex> lock(mutex_);
  revoked_.erase(site);
}

void Admission::revoke_operator(const std::string& name) {
  std::lock_guard<std::mutex> lock(mutex_);
  revoked_operators_.insert(name);
}

void Admission::unrevoke_operator(const std::string& name) {
  std::lock_guard<std::mutex> lock(mutex_);
  revoked_operators_.erase(name);
}

bool Admission::knows_operator(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& [key, id] : operators_) {
    if (id == name) return true;
  }
  return false;
}

bool Admission::revoked(const std::string& site) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return revoked_.count(site) > 0;
}

bool Admission::knows_site(const std::string& site) const {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& [key, id] : sites_) {
    if (id == site) return true;
  }
  return false;
}

std::set<std::string> Admission::site_ids() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::set<std::string> out;
  for (const auto& [key, id] : sites_) out.insert(id);
  return out;
}

void Admission::log_refusal(const std::string& key, const std::string& address, const std::string& why) {
  ++refused_count_;
  // Once a minute per address and reason, and 30 lines a minute in all (fresh keys cost nothing
  // to make, so the total is what bounds a flood of them); the budget remembers a bounded number
  // of (address, reason) pairs.
  const auto held = refusal_lines_.take(address + "\n" + key + "\n" + why);
  if (!held) return;
  log_->warn("refused a connection from {}: {}{}", address, why,
             *held ? " (" + std::to_string(*held + 1) + " attempts since the last line)" : std::string());
}

void Admission::serve(zmq::socket_t& handler, const std::atomic<bool>& stop) {
  while (!stop) {
    zmq::pollitem_t items[] = {{handler.handle(), 0, ZMQ_POLLIN, 0}};
    try {
      zmq::poll(items, 1, std::chrono::milliseconds(100));
    } catch (const zmq::error_t&) {
      continue;
    }
    if (!(items[0].revents & ZMQ_POLLIN)) continue;
    std::vector<zmq::message_t> request;
    try {
      if (!zmq::recv_multipart(handler, std::back_inserter(request))) continue;
    } catch (const zmq::error_t&) {
      continue;
    }
    if (request.size() < 6) continue;
    const std::string version = request[0].to_string(), id = request[1].to_string();
    const std::string domain = request[2].to_string(), address = request[3].to_string();
    const std::string mechanism = request[5].to_string();
    std::string status = "400", text = "not admitted", user;
    if (mechanism == "CURVE" && request.size() >= 7) {
      const auto key = crypto::z85_of_key(request[6].to_string_view());
      auto who = check(domain, key);
      if (who) {
        status = "200";
        text = "OK";
        user = *who;
      } else {
        log_refusal(key, address, who.error().message);
      }
    } else {
      log_refusal(mechanism, address, "mechanism " + mechanism + " (CURVE required)");
    }
    std::vector<zmq::message_t> reply;
    reply.emplace_back(version);
    reply.emplace_back(id);
    reply.emplace_back(status);
    reply.emplace_back(text);
    reply.emplace_back(user);
    reply.emplace_back();
    try {
      zmq::send_multipart(handler, reply);
    } catch (const zmq::error_t&) {
    }
  }
}

}  // namespace fedda::coordinator
