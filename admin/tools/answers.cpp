#include "answers.h"

#include <algorithm>
#include <cmath>
#include <ctime>
#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>

namespace fedda::admin::tools {
namespace {

// Bytes in GiB with `decimals` decimals.
std::string gib(double bytes, int decimals) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(decimals) << bytes / double(1ull << 30) << " GiB";
  return out.str();
}

}  // namespace

std::string text_of(const json& v) {
  if (v.is_null()) return "-";
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

std::string when(const json& ms) {
  if (!ms.is_number()) return "-";
  const std::time_t t = static_cast<std::time_t>(ms.get<std::int64_t>() / 1000);
  std::tm tm{};
  localtime_r(&t, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S", &tm);
  return text;
}

std::string duration(const json& seconds) {
  if (!seconds.is_number()) return "-";
  const long s = std::lround(seconds.get<double>());
  std::ostringstream out;
  if (s >= 3600) out << s / 3600 << "h" << std::setw(2) << std::setfill('0') << (s % 3600) / 60 << "m";
  else if (s >= 60) out << s / 60 << "m" << std::setw(2) << std::setfill('0') << s % 60 << "s";
  else out << s << "s";
  return out.str();
}

// Rows padded to their columns' widths.
void print_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width;
  for (const auto& row : rows) {
    width.resize(std::max(width.size(), row.size()));
    for (std::size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(width[i] - row[i].size() + 2, ' ');
    }
    std::cout << line << "\n";
  }
}

// The open round's sites: "round 4: answered amsterdam, utrecht; waiting for singapore"; "" when none is open.
std::string round_sites_text(const json& r) {
  if (!r.is_object()) return "";
  const auto names = [](const json& list) {
    std::string out;
    for (const auto& s : list) out += (out.empty() ? "" : ", ") + text_of(s);
    return out;
  };
  const auto answered = names(r.value("answered", json::array())), waiting = names(r.value("waiting", json::array()));
  return (r.value("evaluation", false) ? std::string("evaluation") : "round " + std::to_string(r.value("round", 0))) +
         ": answered " + (answered.empty() ? "none yet" : answered) + (waiting.empty() ? "" : "; waiting for " + waiting);
}

void print_jobs(const json& jobs) {
  if (jobs.empty()) {
    std::cout << "no jobs\n";
    return;
  }
  std::vector<std::vector<std::string>> rows = {{"JOB", "TYPE", "STATE", "ROUND", "ETA", "SUBMITTED", "BY", "NOW"}};
  for (const auto& j : jobs) {
    std::string now = j.value("activity", "");
    if (now.empty()) now = j.value("error", "");
    rows.push_back({j.at("id"), j.at("type"), j.at("state"),
                    std::to_string(j.at("round").get<int>()) + "/" + std::to_string(j.at("rounds").get<int>()),
                    duration(j.at("eta_s")), when(j.at("submitted_ms")), j.value("submitted_by", ""), now});
  }
  print_table(rows);
}

void print_status(const json& j) {
  std::cout << "job " << text_of(j.at("id")) << " (" << text_of(j.at("type")) << ", method " << text_of(j.at("method"))
            << "): " << text_of(j.at("state")) << ", round " << j.at("round") << " of " << j.at("rounds") << "\n";
  std::cout << "  sites " << j.at("sites").dump() << (j.value("source", "").empty() ? "" : ", source " + j.value("source", ""))
            << (j.value("teacher", "").empty() ? "" : ", teacher " + j.value("teacher", "")) << "\n";
  if (j.value("max_sample_share", 0.0) > 0) {
    std::cout << "  no site above " << std::lround(100 * j.value("max_sample_share", 0.0)) << "% of a round's samples (max_sample_share)\n";
  }
  std::cout << "  submitted " << when(j.at("submitted_ms")) << " by " << j.value("submitted_by", "") << ", started "
            << when(j.at("started_ms")) << ", ended " << when(j.at("ended_ms")) << "\n";
  if (j.contains("history") && j.at("history").size() > 1) {  // more than "submitted": what happened to it
    std::string steps;
    for (const auto& e : j.at("history")) {
      steps += (steps.empty() ? "" : ", ") + e.value("what", "") + " " + when(e.at("ms")) +
               (e.value("by", "").empty() ? "" : " by " + e.value("by", ""));
    }
    std::cout << "  history: " << steps << "\n";
  }
  if (!j.value("activity", "").empty()) std::cout << "  now: " << j.value("activity", "") << ", about " << duration(j.at("eta_s")) << " left\n";
  if (const auto sites = round_sites_text(j.value("round_sites", json())); !sites.empty()) std::cout << "  " << sites << "\n";
  if (!j.value("error", "").empty()) std::cout << "  " << j.value("error", "") << "\n";
  const auto& rounds = j.at("rounds_done");
  if (!rounds.empty()) {
    std::vector<std::vector<std::string>> rows = {
        {"ROUND", "SECONDS", "LR", "SITES", "SAMPLES", "MEAN LOSS", "FEDERATION", "MISSING"}};
    for (const auto& r : rounds) {
      double loss = 0, samples = 0;
      std::vector<std::string> names;
      for (const auto& s : r.at("sites")) {
        loss += s.at("loss").get<double>() * s.at("samples").get<double>();
        samples += s.at("samples").get<double>();
        names.push_back(s.at("site").get<std::string>());
      }
      std::sort(names.begin(), names.end());  // listed in arrival order; shown by name
      std::string sites;
      for (const auto& n : names) sites += (sites.empty() ? "" : ",") + n;
      std::ostringstream l, sec, lr, fed;
      l << std::fixed << std::setprecision(4) << (samples > 0 ? loss / samples : 0.0);
      sec << std::fixed << std::setprecision(1) << r.at("seconds").get<double>();
      lr << r.at("learning_rate").get<double>();
      if (r.contains("federation")) {
        fed << std::fixed << std::setprecision(0) << 1000 * r["federation"].value("overhead_s", 0.0) << " ms ("
            << std::setprecision(1) << 100 * r["federation"].value("overhead_share", 0.0) << "%)";
      }
      std::string missing;
      for (const auto& m : r.at("missing")) missing += (missing.empty() ? "" : "; ") + m.get<std::string>();
      rows.push_back({std::to_string(r.at("round").get<int>()), sec.str(), lr.str(), sites,
                      std::to_string(static_cast<long>(samples)), l.str(), fed.str(), missing.empty() ? "-" : missing});
    }
    print_table(rows);
    // Differential privacy: each site's epsilon so far, as its latest update said.
    std::map<std::string, std::pair<double, double>> spent;  // site -> (epsilon, noise multiplier)
    for (const auto& r : rounds) {
      for (const auto& s : r.at("sites")) {
        if (s.contains("epsilon")) spent[s.at("site").get<std::string>()] = {s.at("epsilon").get<double>(), s.value("noise_multiplier", 0.0)};
      }
    }
    if (!spent.empty()) {
      std::ostringstream line;
      line << std::fixed << std::setprecision(3);
      for (const auto& [site, e] : spent) {
        line << (line.tellp() > 0 ? ", " : "") << site << " " << e.first << " (noise " << e.second << ")";
      }
      std::cout << "  differential privacy, epsilon spent per site so far: " << line.str() << "\n";
    }
  }
  if (j.contains("summary") && j["summary"].is_object() && j["summary"].contains("mean_dsc")) {
    for (const auto& [site, dsc] : j["summary"]["mean_dsc"].items()) {
      std::cout << "  mean Dice at " << site << ": " << std::fixed << std::setprecision(3) << dsc.get<double>() << "\n";
    }
  }
  if (j.contains("summary") && j["summary"].is_object() && j["summary"].contains("evaluation_missing")) {
    for (const auto& m : j["summary"]["evaluation_missing"]) std::cout << "  not evaluated at " << text_of(m) << "\n";
  }
}


// A site's machine as its agent reported it: "16 cores, 62.8 GiB, 410 GiB free, bfloat16, GPU
// NVIDIA H200"; "-" before its first hello or from an agent too old to say.
std::string resources_text(const json& r) {
  if (!r.is_object()) return "-";
  std::vector<std::string> parts;
  if (r.value("cores", json()).is_number()) parts.push_back(std::to_string(r["cores"].get<long long>()) + " cores");
  if (r.value("memory_bytes", json()).is_number()) parts.push_back(gib(r["memory_bytes"].get<double>(), 1));
  if (r.value("cache_free_bytes", json()).is_number()) parts.push_back(gib(r["cache_free_bytes"].get<double>(), 0) + " free");
  if (r.value("precision", json()).is_string()) parts.push_back(r["precision"].get<std::string>());
  for (const auto& gpu : r.value("gpus", json::array())) {
    if (gpu.is_string()) parts.push_back("GPU " + gpu.get<std::string>());
  }
  std::string text;
  for (const auto& p : parts) text += (text.empty() ? "" : ", ") + p;
  return text.empty() ? "-" : text;
}

void print_sites(const json& sites) {
  std::vector<std::vector<std::string>> rows = {
      {"SITE", "ONLINE", "LAST SEEN", "AGENT", "DEVICE", "THREADS", "RESOURCES", "JOBS"}};
  for (const auto& s : sites) {
    std::string jobs;
    for (const auto& [job, p] : s.at("jobs").items()) {
      std::string state = p.at("state");
      if (state == "ready") state += " " + std::to_string(p.at("subjects").get<int>()) + "+" +
                                     std::to_string(p.at("evaluation_subjects").get<int>()) + " subjects";
      if (state == "refused") {
        state += " (" + p.value("code", "") + (p.value("rule", "").empty() ? "" : ": " + p.value("rule", "")) + "): " +
                 p.value("reason", "");
      }
      if (p.value("refused_updates", 0) > 0) state += ", " + std::to_string(p.value("refused_updates", 0)) + " updates refused";
      jobs += (jobs.empty() ? "" : "; ") + job + " " + state;
    }
    rows.push_back({s.at("site"), s.at("revoked").get<bool>() ? "revoked" : s.at("online").get<bool>() ? "yes" : "no",
                    when(s.at("last_seen_ms")), s.value("agent_version", "-"), s.value("device", "-"),
                    std::to_string(s.value("threads", 0)), resources_text(s.value("resources", json())),
                    jobs.empty() ? "-" : jobs});
  }
  print_table(rows);
}

}  // namespace fedda::admin::tools
