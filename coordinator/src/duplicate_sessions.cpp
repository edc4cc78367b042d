#include "duplicate_sessions.h"

namespace fedda::coordinator {

DuplicateSessions::Verdict DuplicateSessions::hello(const std::string& site, std::uint64_t instance,
                                                    const Session* current, Session* first) {
  if (instance == 0) return Verdict::take_over;  // an agent from before instances: never judged
  if (refused_.count({site, instance})) return Verdict::refused;
  if (!current || current->instance == instance || current->instance == 0) {
    if (!current) replaced_.erase(site);
    return Verdict::take_over;  // no live session, or the same agent on a new connection
  }
  const auto it = replaced_.find(site);
  if (it != replaced_.end() && it->second.instance == instance) {
    if (first) *first = it->second;
    replaced_.erase(it);
    return Verdict::second_agent;
  }
  replaced_[site] = *current;  // a restart, or a second agent: which, the replaced one will tell
  return Verdict::take_over;
}

void DuplicateSessions::refuse(const std::string& site, std::uint64_t instance) {
  if (!refused_.insert({site, instance}).second) return;
  refused_order_.emplace_back(site, instance);
  while (refused_order_.size() > kMaxRemembered) {
    refused_.erase(refused_order_.front());
    refused_order_.pop_front();
  }
}

}  // namespace fedda::coordinator
