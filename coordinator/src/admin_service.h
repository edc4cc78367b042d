#pragma once
// The admin plane's commands (operators -> coordinator): each request is authorised by the
// transport (only operator keys reach the admin endpoint), answered from the job store, the site
// registry and the service's controls, and appended to the coordinator's audit log (who, what,
// when, and whether it succeeded) before the reply is sent.
//
// Replies are JSON documents (`fedda-admin --json` prints them as they are):
//   submit    {"id", "state"}
//   jobs      [{"id", "type", "method", "state", "round", "rounds", "activity", "round_sites", "eta_s", ...}]
//             round_sites: {"round", "evaluation", "answered", "waiting"} while a round is open, else null
//   status    one job of `jobs` plus "rounds": every finished round as rounds.jsonl has it
//   abort, resume   {"id", "state"}
//   download  {"id", "files": [names]} with the files themselves
//   sites     [{"site", "online", "last_seen_ms", "agent_version", "device", "threads", "revoked", "jobs"}]
//   admit, revoke   {"site", "admitted" | "revoked"}
//   logs      {"site", "job", "policy", "lines"}: the site's answer, relayed (ask_logs, answer_logs)
// Owned by the service's one thread; not thread-safe.

#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <variant>
#include <string>
#include <vector>

#include "fedda/common/protocol.h"
#include "fedda/common/result.h"
#include "fedda/coordinator/job_file.h"
#include "job_store.h"
#include "site_registry.h"

namespace fedda::coordinator {

// The service's side of the commands.
class AdminBackend {
 public:
  virtual ~AdminBackend() = default;
  virtual JobStore& store() = 0;
  virtual const SiteRegistry& site_registry() const = 0;
  // Every site this coordinator admits (kit or registry) and those that ever connected.
  virtual std::set<std::string> known_sites() const = 0;
  virtual bool revoked(const std::string& site) const = 0;
  virtual Result<JobRecord*> submit(JobDefinition definition, const std::string& by, const std::string& yaml,
                                    const std::string& teacher_file) = 0;
  virtual Status abort(JobRecord& job, const std::string& by) = 0;
  virtual Status resume(JobRecord& job, const std::string& by) = 0;
  virtual Status admit(const std::string& site, const std::string& by, const std::vector<protocol::NamedFile>& files) = 0;
  virtual Status revoke(const std::string& site, const std::string& by) = 0;
  // What a running job is doing; empty when it is not running here.
  virtual std::string activity(const std::string& job) const = 0;
  // Its open round's sites, answered or awaited; nothing when no round is open.
  virtual std::optional<RoundSites> round_sites(const std::string& job) const = 0;
  // The operator's role as its signed manifest says: lead, member or viewer (lead without a kit).
  virtual std::string operator_role(const std::string& name) const = 0;
};

class AdminService {
 public:
  AdminService(AdminBackend& backend, std::filesystem::path audit_file);
  protocol::AdminReply handle(const std::string& who, const protocol::AdminRequest& request);
  // The read-only commands (jobs, status, sites) for the status page: answered as handle() would,
  // not audited (a page refreshing every few seconds is not an operator's act).
  protocol::AdminReply read(protocol::AdminCommand command, const std::string& target);

  // `logs SITE`: the site answers, later, what its policy lets leave. What to ask the site, or the
  // refusal (audited) naming what is wrong: no site, an unknown or offline one, a tail out of
  // 1 to 1000.
  struct LogsAsk {
    std::string site, job;
    int tail = 100;
  };
  std::variant<LogsAsk, protocol::AdminReply> ask_logs(const std::string& who, const protocol::AdminRequest& request);
  // The operator's answer (audited): the site's `reply`, or, without one, `error` (it did not
  // answer, it went offline).
  protocol::AdminReply answer_logs(const std::string& who, const protocol::AdminRequest& request,
                                   const protocol::LogsReply* reply, const std::string& error);

 private:
  protocol::AdminReply dispatch(const std::string& who, const protocol::AdminRequest& request);
  // The job a command names; error naming the command when none is named or none has the id.
  Result<JobRecord*> job_of(const std::string& command, const std::string& id);
  // One handler per command (dispatch's table); each answers as the header's list says.
  protocol::AdminReply submit(const std::string& who, const protocol::AdminRequest& request);
  protocol::AdminReply clone(const std::string& who, const protocol::AdminRequest& request);
  protocol::AdminReply remove(const std::string& who, const protocol::AdminRequest& request);
  protocol::AdminReply jobs(const std::string& who, const protocol::AdminRequest& request);
  protocol::AdminReply status(const std::string& who, const protocol::AdminRequest& request);
  protocol::AdminReply abort_or_resume(const std::string& who, const protocol::AdminRequest& request);
  protocol::AdminReply download(const std::string& who, const protocol::AdminRequest& request);
  protocol::AdminReply sites(const std::string& who, const protocol::AdminRequest& request);
  protocol::AdminReply admit_or_revoke(const std::string& who, const protocol::AdminRequest& request);
  protocol::AdminReply logs_here(const std::string& who, const protocol::AdminRequest& request);
  // Roles: a command's least role is protocol::admin_commands()' (a viewer reads; a member also
  // submits and clones, and aborts or resumes the jobs it submitted; a lead does everything).
  // The refusal names the role needed; empty when allowed.
  std::string forbidden(const std::string& who, const std::string& role, protocol::AdminCommand command,
                        const protocol::AdminRequest& request);
  void audit(const std::string& who, const protocol::AdminRequest& request, const protocol::AdminReply& reply);

  AdminBackend& backend_;
  std::filesystem::path audit_file_;
};

}  // namespace fedda::coordinator
