#include "secure_rounds.h"

#include "fedda/common/aggregation.h"
#include "fedda/common/crypto.h"
#include "fedda/common/log.h"

namespace fedda::site_agent {
using protocol::MessageType;

SecureRounds::SecureRounds(std::string site, std::optional<kit::SiteKit> kit) : site_(std::move(site)), kit_(std::move(kit)) {}
SecureRounds::~SecureRounds() = default;

Outgoing SecureRounds::failure(const std::string& job, const std::string& reason) const {
  log::get("agent")->error("job {}: {}", job, reason);
  protocol::JobFailed failed;
  failed.code = protocol::FailureCode::secure_aggregation;
  failed.reason = reason;  // names sites and stages only: nothing of the site's data
  return make_outgoing(site_, MessageType::job_failed, job, 0, failed, {}, reason);
}

void SecureRounds::drop_rounds(const std::string& job) {
  for (auto it = rounds_.begin(); it != rounds_.end();) {
    it = it->first.first == job ? rounds_.erase(it) : std::next(it);
  }
}

void SecureRounds::prepared(const std::string& job, std::vector<std::string> training_sites, bool steps_by_share) {
  job_sites_[job] = std::move(training_sites);
  if (steps_by_share) {
    by_share_.insert(job);
  } else {
    by_share_.erase(job);
  }
}

void SecureRounds::forget(const std::string& job) {
  drop_rounds(job);
  job_sites_.erase(job);
  by_share_.erase(job);
}

std::vector<Outgoing> SecureRounds::handle(const Inbound& in) {
  const auto& h = in.header;
  const auto key = std::make_pair(h.job_id, static_cast<int>(h.round));
  auto log = log::get("agent");
  if (h.type == MessageType::secagg_keys) {
    if (kit_ && kit_->site_sign_private.empty()) {
      return {failure(h.job_id, "this site's kit predates secure aggregation (no signing key); re-issue it with fedda-admin add-site")};
    }
    const auto sites = job_sites_.find(h.job_id);
    if (sites == job_sites_.end()) {
      return {failure(h.job_id, "a secure-aggregation round of a job this site has not prepared")};
    }
    drop_rounds(h.job_id);  // one round of a job at a time: an older round's secrets go
    secagg::Signer signer;
    secagg::Verifier verifier;
    if (kit_) {
      signer = [k = kit_->site_sign_private](std::string_view text) { return crypto::sign(k, text); };
      verifier = [root = kit_->root_public](const secagg::PublicKeys& keys, std::string_view text) -> Status {
        auto pub = kit::site_signing_key(root, keys.manifest, keys.manifest_signature, keys.site);
        if (!pub) return pub.error();
        return crypto::verify(*pub, text, keys.signature);
      };
    } else {
      log->warn("job {}: secure aggregation without a kit: round keys are not signed, a substituted key would go unnoticed", h.job_id);
    }
    auto& r = rounds_[key];
    r.client = std::make_unique<secagg::Client>(site_, secagg::round_context(h.job_id, h.round), sites->second, signer, verifier);
    auto keys = kit_ ? r.client->advertise(kit_->manifest, kit_->manifest_signature) : r.client->advertise();
    if (!keys) return {failure(h.job_id, keys.error().message)};
    return {make_outgoing(site_, MessageType::secagg_keys, h.job_id, h.round, *keys, "secure aggregation: round keys")};
  }
  const auto it = rounds_.find(key);
  if (it == rounds_.end()) {
    log->warn("job {}: {} for round {}, which has no key exchange here; dropped", h.job_id, protocol::type_name(h.type), h.round);
    return {};
  }
  auto& r = it->second;
  switch (h.type) {
    case MessageType::secagg_roster: {
      auto roster = protocol::decode_body<secagg::Roster>(in.body);
      if (!roster) return {failure(h.job_id, "malformed secure-aggregation roster: " + roster.error().message)};
      auto shares = r.client->share(*roster);
      if (!shares) return {failure(h.job_id, shares.error().message)};
      log->info("job {}: round {}: keys of {} sites checked; shares sent to {} neighbours", h.job_id, h.round,
                roster->keys.size(), r.client->neighbours().size());
      return {make_outgoing(site_, MessageType::secagg_shares, h.job_id, h.round, protocol::SecaggShares{std::move(*shares)},
                      "secure aggregation: encrypted shares")};
    }
    case MessageType::secagg_relay: {
      auto relay = protocol::decode_body<secagg::ShareRelay>(in.body);
      if (!relay) return {failure(h.job_id, "malformed secure-aggregation relay: " + relay.error().message)};
      r.relay = std::move(*relay);
      return release(h.job_id, h.round, r);
    }
    case MessageType::secagg_unmask: {
      auto request = protocol::decode_body<protocol::SecaggUnmask>(in.body);
      if (!request) return {failure(h.job_id, "malformed unmask request: " + request.error().message)};
      auto revealed = r.client->unmask(request->masked);
      if (!revealed) return {failure(h.job_id, revealed.error().message)};
      protocol::SecaggUnmask answer;
      answer.shares = std::move(*revealed);
      log->info("job {}: round {}: {} shares sent to unmask the sum of {} sites", h.job_id, h.round, answer.shares.size(),
                request->masked.size());
      rounds_.erase(it);  // nothing more of this round will be asked
      return {make_outgoing(site_, MessageType::secagg_unmask, h.job_id, h.round, answer, "secure aggregation: unmasking shares")};
    }
    default: return {};
  }
}

std::vector<Outgoing> SecureRounds::update(Outgoing plain) {
  const auto it = rounds_.find({plain.job_id, plain.round});
  if (it == rounds_.end()) {
    log::get("agent")->warn("job {}: round {}'s update held back: the coordinator ran no key exchange with this site for it, "
                            "and a secure job's update never leaves unmasked",
                            plain.job_id, plain.round);
    return {};
  }
  it->second.held = std::move(plain);
  return release(it->first.first, it->first.second, it->second);
}

std::vector<Outgoing> SecureRounds::release(const std::string& job, int round, Round& r) {
  if (!r.held || !r.relay) return {};
  auto update = protocol::decode_body<protocol::RoundUpdate>(r.held->frames.body);
  r.held.reset();
  if (!update) return {failure(job, "the round's own update does not decode: " + update.error().message)};
  std::int64_t clipped = 0;
  const double weight = aggregation_weight(by_share_.count(job) > 0, update->samples, update->steps);
  auto masked = r.client->mask(*r.relay, {&update->model, &update->discriminator_grads}, weight, &clipped);
  r.relay.reset();
  if (!masked) return {failure(job, masked.error().message)};
  if (clipped > 0) log::get("agent")->warn("job {}: round {}: {} values beyond secure aggregation's range were clipped", job, round, clipped);
  update->model = TensorSet{};
  update->discriminator_grads = TensorSet{};
  update->masked = secagg::to_bytes(*masked);
  const std::string summary = "masked update (" + std::to_string(masked->size()) + " words)";
  return {make_outgoing(site_, MessageType::round_update, job, round, *update, summary)};
}

}  // namespace fedda::site_agent
