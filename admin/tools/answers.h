#pragma once
// fedda-admin's answers as people read them: the coordinator's JSON documents
// (coordinator/src/admin_service.h has their shapes) printed as tables and lines.

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace fedda::admin::tools {

using nlohmann::json;

// A string as it is, null as "-", anything else as JSON.
std::string text_of(const json& v);
// A wall-clock time in milliseconds as local "YYYY-MM-DD HH:MM:SS"; "-" when it is not a number.
std::string when(const json& ms);
// Seconds as "1h05m", "3m07s" or "42s"; "-" when it is not a number.
std::string duration(const json& seconds);
// Rows padded to their columns' widths, on stdout.
void print_table(const std::vector<std::vector<std::string>>& rows);
// The open round's sites: "round 4: answered amsterdam, utrecht; waiting for singapore"; "" when none is open.
std::string round_sites_text(const json& round_sites);
// A site's machine as its agent reported it: "16 cores, 62.8 GiB, 410 GiB free, bfloat16, GPU NVIDIA H200".
std::string resources_text(const json& resources);

// The answers of `jobs`, `status JOB` and `sites`.
void print_jobs(const json& jobs);
void print_status(const json& job);
void print_sites(const json& sites);

}  // namespace fedda::admin::tools
