#include "duplicate_sessions.h"

#include <algorithm>

namespace fedda::coordinator {
namespace {

// Keeps `m` under its bound by forgetting the entry `when` says is oldest.
template <typename Map, typename When>
void bound(Map& m, When when) {
  while (m.size() > DuplicateSessions::kMaxRemembered) {
    m.erase(std::min_element(m.begin(), m.end(), [&](const auto& a, const auto& b) { return when(a) < when(b); }));
  }
}

}  // namespace

void DuplicateSessions::replaced(const std::string& routing, Earlier earlier) {
  replaced_[routing] = std::move(earlier);
  bound(replaced_, [](const auto& e) { return e.second.replaced; });
}

DuplicateSessions::Verdict DuplicateSessions::judge(const std::string& routing, Clock::time_point now,
                                                    Clock::duration margin, Earlier* earlier) {
  if (refused_.count(routing)) return Verdict::refused;
  const auto it = replaced_.find(routing);
  if (it == replaced_.end()) return Verdict::unknown;
  if (now - it->second.replaced < margin) return Verdict::stale;
  if (earlier) *earlier = it->second;
  replaced_.erase(it);
  return Verdict::second_agent;
}

void DuplicateSessions::refuse(const std::string& routing) {
  replaced_.erase(routing);
  refused_[routing] = Clock::now();
  bound(refused_, [](const auto& e) { return e.second; });
}

}  // namespace fedda::coordinator
