#pragma once
// A small HTTP server for a service's status page, JSON API and /metrics (cpp-httplib underneath,
// on its own threads). GET and HEAD only. It listens on loopback unless given a bearer token: bound
// anywhere else, every request must carry the token, compared in constant time: as
// `Authorization: Bearer <token>` (API clients), or as the HttpOnly, SameSite=Strict cookie a
// browser is given on its first visit with `?token=` (answered with a redirect to the same page
// without it, so the token leaves the address bar; `?token=` from a client that does not ask for
// HTML is taken as it is). Answers carry no-store and nosniff headers
// and, for pages, a content security policy that allows the service's own scripts only.
//
// Handlers run on the server's threads: they must only read what is safe to read there (the
// coordinator asks its service thread, see status_api.h; the agent reads atomics).

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "fedda/common/result.h"

namespace fedda::monitoring {

struct HttpRequest {
  std::string path;
  std::vector<std::string> matches;           // the route's regex groups (matches[0]: the whole path)
  std::map<std::string, std::string> params;  // query parameters
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
};

struct Route {
  std::string pattern;  // an ECMAScript regex the whole path must match
  std::function<HttpResponse(const HttpRequest&)> handler;
  bool open = false;    // served without the token (a page's own script and style sheet: nothing of the service's)
};

// The Prometheus text format's content type.
inline constexpr const char* kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";

// "127.0.0.1:8470", "localhost:0", "[::1]:8470": whether the host part is a loopback address.
bool loopback_listen(const std::string& listen);

class HttpServer {
 public:
  // Binds `listen` ("HOST:PORT", port 0 picks a free one) and serves `routes` on a thread. Error
  // names the address: not HOST:PORT, already in use, or not loopback while `token` is empty.
  static Result<std::unique_ptr<HttpServer>> start(const std::string& listen, std::vector<Route> routes,
                                                   std::string token = {}, std::string log_component = "http");
  ~HttpServer();  // stops and joins
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  std::string url() const;  // "http://HOST:PORT" as bound

 private:
  struct Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fedda::monitoring
