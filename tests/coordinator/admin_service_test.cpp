// The admin plane's dispatch, in process: every command of protocol::admin_commands() reaches its
// own handler, each role is held to the least role the table gives its commands, a member stops
// only its own jobs, and an unknown command is refused naming every command. The backend is a
// fake that records what it was asked; the job store is the real one on a scratch folder.
#include "admin_service.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "fedda/common/files.h"
#include "support/test_support.h"

namespace fedda::coordinator {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using protocol::AdminCommand;

class FakeBackend : public AdminBackend {
 public:
  explicit FakeBackend(const fs::path& state) : store_(JobStore::open(state).value()) {}
  JobStore& store() override { return *store_; }
  const SiteRegistry& site_registry() const override { return registry_; }
  std::set<std::string> known_sites() const override { return {"utrecht", "amsterdam"}; }
  bool revoked(const std::string&) const override { return false; }
  Result<JobRecord*> submit(JobDefinition definition, const std::string& by, const std::string& yaml,
                            const std::string& teacher) override {
    calls.push_back("submit by " + by);
    return store_->add(std::move(definition), by, yaml, teacher);
  }
  Status abort(JobRecord& job, const std::string& by) override {
    calls.push_back("abort " + job.id() + " by " + by);
    return store_->set_state(job, JobState::aborted, {}, by);
  }
  Status resume(JobRecord& job, const std::string& by) override {
    calls.push_back("resume " + job.id() + " by " + by);
    return store_->set_state(job, JobState::queued, {}, by);
  }
  Status admit(const std::string& site, const std::string& by, const std::vector<protocol::NamedFile>&) override {
    calls.push_back("admit " + site + " by " + by);
    return Status::success();
  }
  Status revoke(const std::string& site, const std::string& by) override {
    calls.push_back("revoke " + site + " by " + by);
    return Status::success();
  }
  std::string activity(const std::string&) const override { return {}; }
  std::optional<RoundSites> round_sites(const std::string&) const override { return std::nullopt; }
  std::string operator_role(const std::string& name) const override {
    const auto it = roles.find(name);
    return it == roles.end() ? "" : it->second;
  }

  std::map<std::string, std::string> roles = {{"lena", "lead"}, {"mia", "member"}, {"max", "member"}, {"vic", "viewer"}};
  std::vector<std::string> calls;

 private:
  std::unique_ptr<JobStore> store_;
  SiteRegistry registry_;
};

class AdminDispatch : public ::testing::Test {
 protected:
  protocol::AdminReply ask(const std::string& who, AdminCommand command, const std::string& target = {},
                           const std::string& yaml = {}) {
    protocol::AdminRequest r;
    r.command = protocol::admin_command_name(command);
    r.target = target;
    r.job_yaml = yaml;
    return service_.handle(who, r);
  }
  protocol::AdminReply submit_teacher(const std::string& who, const std::string& id) {
    return ask(who, AdminCommand::submit, {}, "id: " + id + "\ntype: teacher\nsource: utrecht\nsites: [utrecht]\n");
  }

  testing::ScratchDir dir_;
  FakeBackend backend_{dir_.path() / "state"};
  AdminService service_{backend_, dir_.path() / "audit.jsonl"};
};

TEST_F(AdminDispatch, TheCommandTableNamesEachCommandOnceInItsEnumsOrder) {
  const auto& all = protocol::admin_commands();
  ASSERT_EQ(all.size(), static_cast<std::size_t>(AdminCommand::logs) + 1);
  std::set<std::string> names;
  for (std::size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(static_cast<std::size_t>(all[i].command), i) << all[i].name;
    EXPECT_TRUE(names.insert(all[i].name).second) << all[i].name << " twice";
    auto parsed = protocol::parse_admin_command(all[i].name);
    ASSERT_TRUE(parsed) << all[i].name;
    EXPECT_EQ(*parsed, all[i].command);
  }
  // The wire names operators' tools have always sent.
  EXPECT_STREQ(protocol::admin_command_name(AdminCommand::remove), "delete");
  EXPECT_STREQ(protocol::admin_command_name(AdminCommand::status), "status");
}

TEST_F(AdminDispatch, EachCommandReachesItsOwnHandler) {
  ASSERT_TRUE(submit_teacher("lena", "t1").ok) << submit_teacher("lena", "t1").error;
  EXPECT_EQ(json::parse(ask("lena", AdminCommand::jobs).json).at(0).at("id"), "t1");
  EXPECT_EQ(json::parse(ask("lena", AdminCommand::status, "t1").json).at("id"), "t1");
  EXPECT_TRUE(ask("lena", AdminCommand::abort, "t1").ok);
  EXPECT_TRUE(ask("lena", AdminCommand::resume, "t1").ok);
  EXPECT_TRUE(ask("lena", AdminCommand::admit, "bern").ok);
  EXPECT_TRUE(ask("lena", AdminCommand::revoke, "bern").ok);
  EXPECT_EQ(backend_.calls, (std::vector<std::string>{"submit by lena", "abort t1 by lena", "resume t1 by lena",
                                                       "admit bern by lena", "revoke bern by lena"}));
  const auto sites = json::parse(ask("vic", AdminCommand::sites).json);
  ASSERT_EQ(sites.size(), 2u);
  EXPECT_EQ(sites.at(0).at("site"), "amsterdam");
  const auto download = ask("vic", AdminCommand::download, "t1");
  ASSERT_TRUE(download.ok) << download.error;
  EXPECT_EQ(json::parse(download.json).at("id"), "t1");
  EXPECT_FALSE(download.files.empty());  // state.json and job.yaml at least
  // logs is relayed to the site by the service, never answered from the store.
  EXPECT_NE(ask("lena", AdminCommand::logs, "utrecht").error.find("asked of the site by the service"), std::string::npos);
  const auto cloned = ask("mia", AdminCommand::clone, "t1", "id: t2\n");
  ASSERT_TRUE(cloned.ok) << cloned.error;
  EXPECT_EQ(json::parse(cloned.json).at("cloned_from"), "t1");
  ASSERT_TRUE(ask("lena", AdminCommand::abort, "t2").ok);
  const auto removed = ask("lena", AdminCommand::remove, "t2");
  ASSERT_TRUE(removed.ok) << removed.error;
  EXPECT_EQ(backend_.store().find("t2"), nullptr);
}

TEST_F(AdminDispatch, EachRoleIsHeldToTheLeastRoleOfTheCommand) {
  ASSERT_TRUE(submit_teacher("lena", "t1").ok);
  auto refusal = [&](const std::string& who, AdminCommand c) { return ask(who, c, "t1").error; };
  EXPECT_EQ(refusal("vic", AdminCommand::submit),
            "operator 'vic' is a viewer (read only): submit needs the member or lead role");
  EXPECT_EQ(refusal("vic", AdminCommand::remove), "operator 'vic' is a viewer (read only): delete needs the lead role");
  EXPECT_EQ(refusal("mia", AdminCommand::admit), "operator 'mia' is a member: admit needs the lead role");
  EXPECT_EQ(refusal("mia", AdminCommand::revoke), "operator 'mia' is a member: revoke needs the lead role");
  // A role string that is not lead, member or viewer reads as a viewer's (the service's backend
  // never gives one: kits check roles, and without a kit every operator is a lead).
  EXPECT_EQ(refusal("stranger", AdminCommand::abort),
            "operator 'stranger' is a viewer (read only): abort needs the member or lead role");
  for (AdminCommand c : {AdminCommand::jobs, AdminCommand::status, AdminCommand::sites, AdminCommand::download}) {
    EXPECT_TRUE(ask("vic", c, "t1").ok) << protocol::admin_command_name(c) << ": " << ask("vic", c, "t1").error;
  }
  for (const auto& c : protocol::admin_commands()) {
    const auto reply = ask("vic", c.command, "t1");
    const bool held_back = reply.error.find("needs the") != std::string::npos;
    EXPECT_EQ(held_back, c.needs != protocol::OperatorRole::viewer) << c.name << ": " << reply.error;
    if (held_back) EXPECT_EQ(reply.kind, ErrorKind::refused);
  }
  EXPECT_TRUE(backend_.calls == std::vector<std::string>{"submit by lena"});
}

TEST_F(AdminDispatch, AMemberStopsAndResumesOnlyItsOwnJobs) {
  ASSERT_TRUE(submit_teacher("mia", "mine").ok);
  ASSERT_TRUE(submit_teacher("max", "theirs").ok);
  EXPECT_TRUE(ask("mia", AdminCommand::abort, "mine").ok);
  EXPECT_EQ(ask("mia", AdminCommand::abort, "theirs").error,
            "operator 'mia' is a member and may abort only its own jobs; job 'theirs' was submitted by max (a lead may)");
  EXPECT_TRUE(ask("lena", AdminCommand::abort, "theirs").ok);
  EXPECT_EQ(ask("mia", AdminCommand::resume, "theirs").error,
            "operator 'mia' is a member and may resume only its own jobs; job 'theirs' was submitted by max (a lead may)");
  EXPECT_EQ(backend_.calls, (std::vector<std::string>{"submit by mia", "submit by max", "abort mine by mia",
                                                       "abort theirs by lena"}));
}

TEST_F(AdminDispatch, AnUnknownCommandIsRefusedNamingEveryCommandAndAudited) {
  protocol::AdminRequest r;
  r.command = "reboot";
  const auto reply = service_.handle("lena", r);
  EXPECT_FALSE(reply.ok);
  EXPECT_EQ(reply.kind, ErrorKind::invalid);
  EXPECT_EQ(reply.error, "unknown command 'reboot' (submit, clone, delete, jobs, status, abort, resume, download, sites, "
                         "admit, revoke, logs)");
  const auto missing = ask("lena", AdminCommand::status, "nope");
  EXPECT_EQ(missing.kind, ErrorKind::not_found);
  // Both in the audit log, refused, with who asked.
  const auto audit = files::read_all(dir_.path() / "audit.jsonl").value();
  std::vector<json> lines;
  std::istringstream in(audit);
  for (std::string line; std::getline(in, line);) lines.push_back(json::parse(line));
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].at("command"), "reboot");
  EXPECT_EQ(lines[0].at("operator"), "lena");
  EXPECT_FALSE(lines[0].at("ok").get<bool>());
  EXPECT_EQ(lines[1].at("command"), "status");
  EXPECT_EQ(lines[1].at("target"), "nope");
}

TEST_F(AdminDispatch, TheStatusPageReadsOnlyTheReadOnlyCommandsAndIsNotAudited) {
  ASSERT_TRUE(submit_teacher("lena", "t1").ok);
  EXPECT_TRUE(service_.read(AdminCommand::jobs, "").ok);
  EXPECT_TRUE(service_.read(AdminCommand::status, "t1").ok);
  EXPECT_TRUE(service_.read(AdminCommand::sites, "").ok);
  EXPECT_EQ(service_.read(AdminCommand::abort, "t1").error, "not a read-only command: abort");
  EXPECT_EQ(backend_.calls, std::vector<std::string>{"submit by lena"});
  const auto audit = files::read_all(dir_.path() / "audit.jsonl").value();
  EXPECT_EQ(std::count(audit.begin(), audit.end(), '\n'), 1);  // the submit only
}

}  // namespace
}  // namespace fedda::coordinator
