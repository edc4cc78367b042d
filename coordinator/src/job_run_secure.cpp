#include "job_run_detail.h"
// A secure round's stages at the coordinator (secure_aggregation: true; secagg.h has the
// protocol): the sites' public keys, then their encrypted shares relayed, then the masked
// updates (counted by job_run.cpp's handle_update), then the shares that unmask the sum. The
// coordinator only relays and sums; it never holds a site's update in the clear.

#include <algorithm>
#include <map>
#include <set>

namespace fedda::coordinator {
using protocol::MessageType;
using job_run_detail::duration_of;
using job_run_detail::Stopwatch;

bool JobRun::open_secure(const protocol::RoundTask& task, const std::vector<std::string>& sites) {
  const auto& spec = record_.definition.spec;
  auto& m = *model_;
  secure_ = std::make_unique<Secure>();
  if (m.discriminator) secure_->grad_layout = protocol::parameters_only(task.discriminator);
  secure_->aggregator = std::make_unique<secagg::Aggregator>(secagg::round_context(id(), round_),
                                                             std::vector<const TensorSet*>{&m.global, &secure_->grad_layout},
                                                             secagg::minimum_sum(spec.sites.size()));
  secure_->stage_deadline = host_.now() + duration_of(spec.secagg_timeout_s);
  auto encoded = make_broadcast(nullptr, protocol::encode_empty(protocol::Header{}), id(), round_);
  if (!encoded) {
    fail(encoded.error().message);
    return false;
  }
  for (const auto& sid : sites) send_to(sid, MessageType::secagg_keys, *encoded);
  return true;
}

bool JobRun::secure_stages(Clock::time_point now) {
  if (phase_ != Phase::collecting || !secure_) return false;
  const auto& spec = record_.definition.spec;
  if (secure_->stage != Secure::Stage::unmasking) {
    // A site lost from a secure round cannot come back into it (it missed the key exchange):
    // once too few are left for the sum this job may open, the round cannot finish.
    std::set<std::string> left(expected_.begin(), expected_.end());
    left.insert(answered_.begin(), answered_.end());
    if (static_cast<int>(left.size()) < needed_) {
      const std::string why = needed_ > spec.min_sites
                                  ? "a secure round of this job opens a sum of at least " + std::to_string(needed_) +
                                        " (a sum of two would show each of them the other's update)"
                                  : "fewer than min_sites " + std::to_string(spec.min_sites) +
                                        " (a site lost from a secure round cannot come back into it)";
      fail("round " + std::to_string(round_) + ": " + std::to_string(left.size()) + " sites are left in the round, and " + why +
           "; nothing was unmasked. Resume the job (fedda-admin resume " + id() + ") once " + std::to_string(needed_) +
           " sites are ready");
      return true;
    }
  }
  if (secure_->stage == Secure::Stage::collecting) return false;  // the round's own collection runs
  if (secure_->stage == Secure::Stage::unmasking || now < give_up_) {
    secure_step(now);
  } else {
    fail("round " + std::to_string(round_) + " of job " + id() + ": secure aggregation did not finish in time");
  }
  return true;
}

void JobRun::handle_secagg(SiteInfo& site, const protocol::Header& h, const std::string& body) {
  if (!secure_ || phase_ != Phase::collecting || h.round != round_) {
    // A share that comes after its round was unmasked (the sum needed only the threshold's
    // number) is expected traffic, not news.
    const bool late_share = h.type == MessageType::secagg_unmask && h.round >= 1 && h.round <= record_.finished_round;
    if (late_share) {
      log_->debug("site {}: secagg_unmask for round {} of {} after the round was unmasked; not needed", site.id, h.round, id());
    } else if (const auto held = host_.log_budget().take(site.id)) {
      log_->warn("site {}: {} for round {} of {} dropped (no secure round open){}", site.id, protocol::type_name(h.type), h.round,
                 id(), held_back(*held));
    }
    return;
  }
  auto& a = *secure_->aggregator;
  const auto warn = [&](const std::string& why) { log_->warn("site {}: {} dropped: {}", site.id, protocol::type_name(h.type), why); };
  switch (h.type) {
    case MessageType::secagg_keys: {
      if (secure_->stage != Secure::Stage::keys) return warn("not in the key stage");
      auto keys = protocol::decode_body<secagg::PublicKeys>(body);
      if (!keys) return warn(keys.error().message);
      if (keys->site != site.id) return warn("keys named for '" + keys->site + "'");
      if (!expected_.count(site.id)) return warn("not in this round");
      if (auto st = a.add_keys(std::move(*keys)); !st) return warn(st.error().message);
      return;
    }
    case MessageType::secagg_shares: {
      if (secure_->stage != Secure::Stage::shares) return warn("not in the share stage");
      auto shares = protocol::decode_body<protocol::SecaggShares>(body);
      if (!shares) return warn(shares.error().message);
      if (!expected_.count(site.id)) return warn("not in this round");
      if (auto st = a.add_shares(site.id, std::move(shares->shares)); !st) return warn(st.error().message);
      return;
    }
    case MessageType::secagg_unmask: {
      if (secure_->stage != Secure::Stage::unmasking) return warn("not in the unmasking stage");
      auto answer = protocol::decode_body<protocol::SecaggUnmask>(body);
      if (!answer) return warn(answer.error().message);
      if (auto st = a.add_revealed(site.id, answer->shares); !st) return warn(st.error().message);
      return;
    }
    default: return;
  }
}

void JobRun::secure_step(Clock::time_point now) {
  auto& s = *secure_;
  auto& a = *s.aggregator;
  const auto& spec = record_.definition.spec;
  const auto stage_timeout = duration_of(spec.secagg_timeout_s);
  // Sites of the round that did not take part in a stage leave the round.
  const auto close_stage = [&](const std::set<std::string>& took_part, const char* what) {
    for (auto it = expected_.begin(); it != expected_.end();) {
      if (took_part.count(*it)) {
        ++it;
        continue;
      }
      log_->warn("site {}: no secure-aggregation {} in time; left out of round {}", *it, what, round_);
      current_.missing.push_back(*it + " (no secure-aggregation " + what + ")");
      it = expected_.erase(it);
    }
  };
  const auto all_of = [&](const std::set<std::string>& set) {
    return std::all_of(expected_.begin(), expected_.end(), [&](const std::string& sid) { return set.count(sid) > 0; });
  };
  switch (s.stage) {
    case Secure::Stage::keys: {
      if (!all_of(a.keyed()) && now < s.stage_deadline) return;
      close_stage(a.keyed(), "keys");
      std::map<std::string, double> weights;
      for (const auto& sid : expected_) weights[sid] = weight_of(sid, host_.sites().in(sid, id()).samples);
      auto roster = a.roster(weights, spec.secagg_threshold,
                             secagg::GraphOptions{0, 16, spec.seed * 0x9e3779b97f4a7c15ULL + static_cast<std::uint64_t>(round_)});
      if (!roster) return fail("round " + std::to_string(round_) + ": " + roster.error().message);
      auto encoded = make_broadcast(nullptr, protocol::encode(protocol::Header{}, *roster), id(), round_);
      if (!encoded) return fail(encoded.error().message);
      for (const auto& k : roster->keys) send_to(k.site, MessageType::secagg_roster, *encoded);
      log_->info("job {}: round {}: secure aggregation among {} sites, threshold {}", id(), round_, roster->keys.size(), roster->threshold);
      s.stage = Secure::Stage::shares;
      s.stage_deadline = now + stage_timeout;
      return;
    }
    case Secure::Stage::shares: {
      if (!all_of(a.shared()) && now < s.stage_deadline) return;
      close_stage(a.shared(), "shares");
      auto relays = a.relays();
      if (!relays) return fail("round " + std::to_string(round_) + ": " + relays.error().message);
      for (auto& [sid, relay] : *relays) {
        auto encoded = make_broadcast(nullptr, protocol::encode(protocol::Header{}, relay), id(), round_);
        if (!encoded) return fail(encoded.error().message);
        send_to(sid, MessageType::secagg_relay, *encoded);
      }
      log_->info("job {}: round {}: shares of {} sites relayed", id(), round_, a.shared().size());
      s.stage = Secure::Stage::collecting;
      return;
    }
    case Secure::Stage::collecting: return;  // the round's own collection (step) runs
    case Secure::Stage::unmasking: {
      if (a.can_finish()) {
        const Stopwatch unmasking;
        auto sums = a.finish();
        current_.cost.aggregate_s += unmasking.seconds();  // the unmasking is the secure round's averaging
        if (!sums) return fail("round " + std::to_string(round_) + ": " + sums.error().message);
        secure_.reset();
        std::optional<TensorSet> grads;
        if (model_->discriminator) grads = std::move((*sums)[1]);
        return commit_round(std::move((*sums)[0]), std::move(grads));
      }
      if (now >= s.stage_deadline) {
        return fail("round " + std::to_string(round_) + ": too few sites sent their shares to unmask the sum in time");
      }
      return;
    }
  }
}

void JobRun::secure_unmask() {
  auto& s = *secure_;
  auto survivors = s.aggregator->survivors();  // closes the sum: no masked update is added after it
  if (!survivors) return fail("round " + std::to_string(round_) + ": " + survivors.error().message);
  for (auto it = expected_.begin(); it != expected_.end();) it = answered_.count(*it) ? std::next(it) : expected_.erase(it);
  protocol::SecaggUnmask request;
  request.masked = *survivors;
  auto encoded = make_broadcast(nullptr, protocol::encode(protocol::Header{}, request), id(), round_);
  if (!encoded) return fail(encoded.error().message);
  for (const auto& sid : *survivors) send_to(sid, MessageType::secagg_unmask, *encoded);
  std::string dropped;
  for (const auto& sid : s.aggregator->shared()) {
    if (!s.aggregator->masked().count(sid)) dropped += (dropped.empty() ? "" : ", ") + sid;
  }
  log_->info("job {}: round {}: unmasking the sum of {} sites{}", id(), round_, survivors->size(),
             dropped.empty() ? "" : "; removing the masks of " + dropped + " (shared, then dropped out)");
  s.stage = Secure::Stage::unmasking;
  s.stage_deadline = host_.now() + duration_of(record_.definition.spec.secagg_timeout_s);
}

std::string JobRun::secure_activity() const {
  const auto& a = *secure_->aggregator;
  const auto n = std::to_string(expected_.size());
  switch (secure_->stage) {
    case Secure::Stage::keys: return "secure aggregation: " + std::to_string(a.keyed().size()) + " of " + n + " sites' keys in";
    case Secure::Stage::shares: return "secure aggregation: " + std::to_string(a.shared().size()) + " of " + n + " sites' shares in";
    case Secure::Stage::unmasking: return "secure aggregation: unmasking the sum of " + std::to_string(a.masked().size()) + " sites";
    case Secure::Stage::collecting: return std::to_string(answered_.size()) + " of " + n + " masked updates in";
  }
  return "";
}

}  // namespace fedda::coordinator
