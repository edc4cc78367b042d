#pragma once
// The site agent service: connects outbound to the coordinator (DEALER), says hello,
// heartbeats, and reconnects with exponential backoff when the coordinator goes silent
// (the Paranoid Pirate pattern). Job offers and round tasks run on a worker thread with the
// training engine while the network thread keeps heartbeating; finished updates are announced
// (update_ready) and uploaded when the coordinator grants credit. Scans, labels and soft labels
// never leave the site: only model weights, discriminator gradients and metrics are sent.
//
// run() blocks until stop() (async-signal-safe) has been called and the current task has
// drained (or drain_timeout_s passed). One Agent per process.

#include <memory>

#include "fedda/site_agent/site_config.h"

namespace fedda::site_agent {

class Agent {
 public:
  explicit Agent(SiteConfig config);
  ~Agent();
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  // Returns 0 after a clean drain, 1 after a fatal error (logged), 3 when the drain timeout
  // passed with a task still running (the caller should exit the process without unwinding).
  int run();
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fedda::site_agent
