#include "site_registry.h"

namespace fedda::coordinator {

std::int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

SiteInfo& SiteRegistry::begin_session(const std::string& id, const std::string& routing, std::uint64_t sequence,
                                      const std::string& agent_version, const std::string& device, int threads) {
  auto& site = sites_[id];
  if (site.alive) site_of_routing_.erase(site.routing);
  site.id = id;
  site.routing = routing;
  site.alive = true;
  site.last_seen = Clock::now();
  site.last_seen_ms = wall_ms();
  site.connected_ms = site.last_seen_ms;
  site.agent_version = agent_version;
  site.device = device;
  site.threads = threads;
  site.last_sequence = sequence;
  for (auto& [job, p] : site.jobs) {
    p.offered = false;
    p.ready = false;
  }
  site_of_routing_[routing] = id;
  return site;
}

bool SiteRegistry::end_session(const std::string& id) {
  auto it = sites_.find(id);
  if (it == sites_.end() || !it->second.alive) return false;
  auto& site = it->second;
  site.alive = false;
  site_of_routing_.erase(site.routing);
  for (auto& [job, p] : site.jobs) {
    p.offered = false;
    p.ready = false;
  }
  return true;
}

SiteInfo* SiteRegistry::find(const std::string& id) {
  auto it = sites_.find(id);
  return it == sites_.end() ? nullptr : &it->second;
}

const SiteInfo* SiteRegistry::find(const std::string& id) const {
  auto it = sites_.find(id);
  return it == sites_.end() ? nullptr : &it->second;
}

SiteInfo* SiteRegistry::by_routing(const std::string& routing) {
  auto it = site_of_routing_.find(routing);
  return it == site_of_routing_.end() ? nullptr : find(it->second);
}

bool SiteRegistry::accept(SiteInfo& site, std::uint64_t sequence) {
  if (sequence <= site.last_sequence) return false;
  site.last_sequence = sequence;
  site.last_seen = Clock::now();
  site.last_seen_ms = wall_ms();
  return true;
}

std::vector<std::string> SiteRegistry::silent_since(Clock::time_point now, Clock::duration silence) const {
  std::vector<std::string> out;
  for (const auto& [id, site] : sites_) {
    if (site.alive && now - site.last_seen > silence) out.push_back(id);
  }
  return out;
}

}  // namespace fedda::coordinator
