#pragma once
// Who may connect, for the ZAP handler (RFC 27) that libzmq asks before any CurveZMQ peer gets
// through: site keys on the data endpoint (ZAP domain "fedda"), operator keys on the admin
// endpoint ("fedda-admin"), each named by its signed manifest, never a revoked site. Operators
// admit and revoke sites while the service runs, so the lists are guarded by a mutex: the ZAP
// thread reads them, the service's thread changes them. Refusals are logged at most once a
// minute per address, key and reason and thirty times a minute in all, with a count of those
// held back, so neither a misconfigured agent retrying nor a flood of fresh keys fills the log
// or the memory.

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <set>
#include <string>

#include "fedda/common/kit.h"
#include "fedda/common/log.h"
#include "fedda/common/result.h"

namespace zmq {
class socket_t;
}

namespace fedda::coordinator {

inline constexpr const char* kDataDomain = "fedda";
inline constexpr const char* kAdminDomain = "fedda-admin";

class Admission {
 public:
  Admission(const kit::CoordinatorKit& kit, std::shared_ptr<spdlog::logger> log);

  // The id `key` (Z85) is admitted as on `domain`, or why not.
  Result<std::string> check(const std::string& domain, const std::string& key);

  void admit_site(const std::string& key, const std::string& site);
  void revoke(const std::string& site);
  void unrevoke(const std::string& site);
  // An operator's key refused on the admin endpoint from its next connection (fedda-admin
  // connects once a command), until unrevoked.
  void revoke_operator(const std::string& name);
  void unrevoke_operator(const std::string& name);
  bool knows_operator(const std::string& name) const;
  bool revoked(const std::string& site) const;
  bool knows_site(const std::string& site) const;
  std::set<std::string> site_ids() const;

  // Answers ZAP requests on `handler` until `stop` is set.
  void serve(zmq::socket_t& handler, const std::atomic<bool>& stop);

  // Connections refused so far (for /metrics).
  std::uint64_t refused() const { return refused_count_; }

 private:
  void log_refusal(const std::string& key, const std::string& address, const std::string& why);

  mutable std::mutex mutex_;
  std::map<std::string, std::string> sites_;      // key -> site id
  std::map<std::string, std::string> operators_;  // key -> operator name
  std::set<std::string> revoked_, revoked_operators_;
  log::Budget refusal_lines_{1, 30};  // lines a minute per (address, key, reason), and in all
  std::shared_ptr<spdlog::logger> log_;
  std::atomic<std::uint64_t> refused_count_{0};
};

}  // namespace fedda::coordinator
