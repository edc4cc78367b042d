#include "job_run_detail.h"
// What a job's sites send it, checked before anything of it counts: job_ready (what a site
// declares: its samples are its FedAvg weight), job_failed and job_pending, update_ready (asking
// upload credit) and round_update (an update, or an evaluation's rows), each dropped or refused
// with the reason logged and, for updates, named in the round.

#include <algorithm>
#include <cstdio>
#include <set>

#include "fedda/common/text.h"

namespace fedda::coordinator {
using protocol::MessageType;
using job_run_detail::Stopwatch;

namespace {

// The most training samples (slices) a site may declare for a job: far beyond any archive, and
// small enough that sums and products of counts stay exact (the coordinator fuzzer's
// INT64_MAX declarations overflowed the round's sums).
constexpr std::int64_t kMaxDeclaredSamples = std::int64_t{1} << 32;

// The evaluation rows a site sends are only those it was asked for: at most as many as the
// subjects it declared, each subject once, and never a subject id that could break a table.
std::vector<protocol::SubjectMetrics> accepted_rows(const std::vector<protocol::SubjectMetrics>& rows, int declared,
                                                    std::string& dropped) {
  std::vector<protocol::SubjectMetrics> out;
  std::set<std::string> seen;
  int refused = 0;
  for (const auto& r : rows) {
    if (static_cast<int>(out.size()) >= declared || !protocol::is_pseudonym(r.subject) || !seen.insert(r.subject).second) {
      ++refused;
      continue;
    }
    out.push_back(r);
  }
  if (refused) dropped = std::to_string(refused) + " of " + std::to_string(rows.size()) + " rows";
  return out;
}

}  // namespace

void JobRun::handle(SiteInfo& site, const protocol::Header& h, const std::string& body) {
  if (!uses(site.id)) {  // nothing of it is kept, not even an entry under the site
    if (const auto held = host_.log_budget().take(site.id)) {
      log_->warn("site {}: dropped {} for job {}, which it is not a site of{}", site.id, protocol::type_name(h.type), id(),
                 held_back(*held));
    }
    return;
  }
  auto& p = site.jobs[id()];
  switch (h.type) {
    case MessageType::job_ready: return handle_ready(site, p, body);
    case MessageType::job_failed: {
      auto failed = protocol::decode_body<protocol::JobFailed>(body);
      cannot_run(site.id, p, failed ? failed->code : protocol::FailureCode::malformed,
                 failed ? text::utf8_prefix(failed->rule, 100) : "",
                 failed ? text::utf8_prefix(failed->reason, 1000) : "(malformed reason)");
      log_->error("site {}: cannot run job {} ({}{}): {}", site.id, id(), protocol::failure_code_name(p.failure_code),
                  p.failure_rule.empty() ? "" : ": " + p.failure_rule, p.failure);
      return;
    }
    case MessageType::job_pending: {
      auto pending = protocol::decode_body<protocol::JobPending>(body);
      if (!p.offered) return;
      p.pending = true;
      log_->info("site {}: job {} waits at the site: {}", site.id, id(), pending ? text::utf8_prefix(pending->reason, 200) : "(malformed)");
      return;
    }
    case MessageType::update_ready:
      if (!wants_upload(site.id, h.round)) {
        log_->warn("site {}: update for round {} of {} discarded (round {} open)", site.id, h.round, id(), round_);
        return;
      }
      host_.queue_upload(site.id, id(), h.round);
      return;
    case MessageType::secagg_keys:
    case MessageType::secagg_shares:
    case MessageType::secagg_unmask: return handle_secagg(site, h, body);
    case MessageType::round_update:
      if (!wants_upload(site.id, h.round)) {
        log_->warn("site {}: update for round {} discarded (round {} open, {})", site.id, h.round, round_,
                   answered_.count(site.id) ? "already counted" : "not asked for or late");
        return;
      }
      return handle_update(site, body);
    default:
      log_->warn("site {}: dropped unexpected {}", site.id, protocol::type_name(h.type));
  }
}

void JobRun::handle_update(SiteInfo& site, const std::string& body) {
  auto& m = *model_;
  const Stopwatch received;
  auto update = protocol::decode_body<protocol::RoundUpdate>(body);
  if (!update) {
    log_->warn("site {}: malformed update dropped: {}", site.id, update.error().message);
    expected_.erase(site.id);
    current_.missing.push_back(site.id + " (malformed)");
    return;
  }
  if (phase_ == Phase::evaluating) {
    std::string dropped;
    const auto rows = accepted_rows(update->metrics, site.jobs[id()].evaluation_subjects, dropped);
    if (!dropped.empty()) log_->warn("site {}: {} of its evaluation refused (beyond the subjects it declared, repeated, or not a pseudonym)", site.id, dropped);
    for (const auto& row : rows) evaluation_.push_back({site.id, row});
    if (update->has_quality) quality_[site.id] = update->quality;
    answered_.insert(site.id);
    log_->info("site {}: evaluated {} subjects", site.id, rows.size());
    return;
  }
  // The FedAvg weight is the sample count the site declared when it got ready; an update that
  // claims another, holds a NaN or an infinity, or moves the model further than the job allows is
  // refused, named in rounds.jsonl and counted against the site.
  auto& p = site.jobs[id()];
  const auto& spec = record_.definition.spec;
  const auto refuse = [&](const std::string& why) {
    log_->warn("site {}: update for round {} refused: {}", site.id, round_, why);
    expected_.erase(site.id);
    current_.missing.push_back(site.id + " (refused)");
    current_.refused.emplace_back(site.id, why);
    ++p.refused_updates;
  };
  if (update->samples != p.samples) {
    return refuse("sample count " + std::to_string(update->samples) + " differs from the " + std::to_string(p.samples) +
                  " it declared");
  }
  if (spec.steps_by_share && update->steps != steps_asked(site.id)) {  // its weight is samples per step asked
    return refuse(std::to_string(update->steps) + " steps taken, " + std::to_string(steps_asked(site.id)) + " asked");
  }
  const auto count_in = [&] {
    answered_.insert(site.id);
    current_.sites.push_back({site.id, update->samples, update->steps, update->loss, update->seconds,
                              static_cast<std::int64_t>(body.size()), update->overhead_seconds, update->precision,
                              update->epsilon, update->noise_multiplier});
    current_.cost.aggregate_s += received.seconds();
    log_->info("site {}: round {} update in ({} samples, {} steps, loss {:.4f}, {:.1f} s{})", site.id, round_, update->samples,
               update->steps, update->loss, update->seconds, secure_ ? ", masked" : "");
  };
  if (secure_ || !update->masked.empty()) {
    // Only the masked vector is added to the round's sum; nothing of it is kept or logged.
    if (!secure_) return refuse("a masked update in a round without secure aggregation");
    if (weight_of(site.id, update->samples) != secure_->aggregator->weight_of(site.id)) {
      return refuse("sample count " + std::to_string(update->samples) + " differs from its weight in the round's roster");
    }
    if (!update->model.tensors.empty() || !update->discriminator_grads.tensors.empty()) {
      return refuse("a secure round's update must carry the masked vector only");
    }
    auto words = secagg::from_bytes(update->masked);
    if (!words) return refuse(words.error().message);
    if (auto st = secure_->aggregator->add_masked(site.id, *words); !st) return refuse(st.error().message);
    return count_in();
  }
  // Every tensor's name, shape and byte count against the job's layout before any of its values
  // is read: a forged shape is refused here, not allocated.
  if (auto st = check_matches(update->model, m.model_average->layout()); !st) return refuse("model: " + st.error().message);
  if (m.grad_average) {
    if (auto st = check_matches(update->discriminator_grads, m.grad_average->layout()); !st) {
      return refuse("discriminator gradients: " + st.error().message);
    }
  } else if (!update->discriminator_grads.tensors.empty()) {
    return refuse("discriminator gradients in a job without a discriminator");
  }
  if (auto st = check_finite(update->model); !st) return refuse("model: " + st.error().message);
  if (auto st = check_finite(update->discriminator_grads); !st) return refuse("discriminator gradients: " + st.error().message);
  if (spec.max_update_norm > 0) {
    const double distance = l2_distance(update->model, m.global);
    if (!(distance <= spec.max_update_norm)) {
      char text[160];
      std::snprintf(text, sizeof text, "update norm %.4g exceeds max_update_norm %.4g", distance, spec.max_update_norm);
      return refuse(text);
    }
  }
  const double weight = weight_of(site.id, p.samples);
  Status st = m.model_average->add(update->model, weight);
  if (st && m.grad_average) st = m.grad_average->add(update->discriminator_grads, weight);
  if (!st) return refuse(st.error().message);
  count_in();
}

void JobRun::handle_ready(SiteInfo& site, Participation& p, const std::string& body) {
  auto ready = protocol::decode_body<protocol::JobReady>(body);
  if (!ready) {
    log_->warn("site {}: malformed job_ready dropped: {}", site.id, ready.error().message);
    return;
  }
  if (!p.offered) {
    log_->warn("site {}: job_ready for {} on a session it was not offered on; dropped", site.id, id());
    return;
  }
  if (ready->samples < 0 || ready->samples > kMaxDeclaredSamples) {
    // Not ready: a round neither counts the site in nor waits for it; a new offer (its next
    // session) clears this as it clears any failure.
    log_->warn("site {}: job_ready for {} declaring {} samples dropped (0 to {} are taken)", site.id, id(),
               ready->samples, kMaxDeclaredSamples);
    return cannot_run(site.id, p, protocol::FailureCode::malformed, "",
                      "job_ready declared " + std::to_string(ready->samples) + " samples (0 to " +
                          std::to_string(kMaxDeclaredSamples) + " are taken)");
  }
  p.ready = true;
  p.pending = false;
  p.failed = false;
  p.samples = ready->samples;
  p.subjects = ready->subjects;
  p.evaluation_subjects = ready->evaluation_subjects;
  constexpr std::size_t kSkippedLogged = 10;
  for (std::size_t i = 0; i < std::min(ready->skipped.size(), kSkippedLogged); ++i) {
    const auto& s = ready->skipped[i];
    log_->warn("site {}: skipped subject {}: {}", site.id, s.subject, text::utf8_prefix(s.reason, 300));
  }
  if (ready->skipped.size() > kSkippedLogged) {
    log_->warn("site {}: {} more subjects skipped", site.id, ready->skipped.size() - kSkippedLogged);
  }
  log_->info("site {}: ready for {} ({} training subjects, {} samples, {} evaluation subjects)", site.id, id(),
             ready->subjects, ready->samples, ready->evaluation_subjects);
}

}  // namespace fedda::coordinator
