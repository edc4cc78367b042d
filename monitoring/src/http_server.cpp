#include "fedda/monitoring/http_server.h"

#include <algorithm>
#include <chrono>
#include <mutex>
#include <regex>
#include <thread>

#include <sys/socket.h>

#include <httplib.h>

#include "fedda/common/crypto.h"
#include "fedda/common/log.h"

namespace fedda::monitoring {
namespace {

struct HostPort {
  std::string host;
  int port = -1;
};

Result<HostPort> parse_listen(const std::string& listen) {
  const auto colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == listen.size()) {
    return make_error("'" + listen + "': expected HOST:PORT (for example 127.0.0.1:8470)");
  }
  HostPort out;
  out.host = listen.substr(0, colon);
  if (out.host.size() > 2 && out.host.front() == '[' && out.host.back() == ']') out.host = out.host.substr(1, out.host.size() - 2);
  const auto port = listen.substr(colon + 1);
  if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos || std::stoi(port) > 65535) {
    return make_error("'" + listen + "': the port must be a number from 0 to 65535");
  }
  out.port = std::stoi(port);
  return out;
}

bool loopback_host(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

// The page's own scripts and styles only; nothing a site sent can run (it is only ever text).
constexpr const char* kPagePolicy =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

// The cookie a browser holds the token in once it has traded the `?token=` of its first visit.
constexpr const char* kTokenCookie = "fedda_token";

// The value of cookie `name` in a Cookie header ("a=1; fedda_token=...; b=2"), or "".
std::string cookie_value(const std::string& header, const std::string& name) {
  std::size_t at = 0;
  while (at < header.size()) {
    const auto end = std::min(header.find(';', at), header.size());
    auto pair = header.substr(at, end - at);
    pair.erase(0, pair.find_first_not_of(' '));
    const auto eq = pair.find('=');
    if (eq != std::string::npos && pair.compare(0, eq, name) == 0) return pair.substr(eq + 1);
    at = end + 1;
  }
  return "";
}

// A browser's navigation (it asks for HTML first); an API client (curl, Prometheus) does not.
bool browser_navigation(const httplib::Request& req) {
  return req.get_header_value("Accept").find("text/html") != std::string::npos;
}

// The token every request must carry where the server has one: as a bearer header, as the
// cookie a browser was given, or as `?token=` (a browser's first visit, traded for that cookie).
// Thread-safe: the server's threads share one.
class TokenGate {
 public:
  TokenGate(std::string token, std::shared_ptr<spdlog::logger> log) : token_(std::move(token)), log_(std::move(log)) {}

  // True when `req` may be served; otherwise `res` holds the answer (the redirect that trades a
  // first visit's token for the cookie, or 401). `known_route`: the path is one of the server's.
  bool admit(const httplib::Request& req, httplib::Response& res, bool known_route) {
    std::string offered;
    const auto auth = req.get_header_value("Authorization");
    const bool in_query = auth.rfind("Bearer ", 0) != 0 && req.has_param("token");
    if (auth.rfind("Bearer ", 0) == 0) offered = auth.substr(7);
    else if (in_query) offered = req.get_param_value("token");
    else offered = cookie_value(req.get_header_value("Cookie"), kTokenCookie);
    const bool valid = crypto::equal_secrets(offered, token_);
    if (valid && in_query && known_route && browser_navigation(req)) {
      // A browser's first visit: the token is traded for a cookie no script can read and no
      // other site's request carries, and the address bar (history, bookmarks) loses it.
      // The path matched a route, so it holds nothing a header could be forged with.
      res.set_header("Set-Cookie", std::string(kTokenCookie) + "=" + token_ + "; HttpOnly; SameSite=Strict; Path=/");
      res.set_redirect(req.path, 303);
      return false;
    }
    if (valid) return true;
    res.status = 401;
    res.set_header("WWW-Authenticate", "Bearer realm=\"fedda\"");
    res.set_content("{\"error\": \"a bearer token is needed (fedda-coordinator status-token --kit KIT)\"}",
                    "application/json");
    // At most one line a minute, with the count, so a scanner cannot flood the log.
    const auto now = std::chrono::steady_clock::now();
    std::lock_guard<std::mutex> lock(mutex_);
    ++refused_;
    if (last_line_ == std::chrono::steady_clock::time_point{} || now - last_line_ > std::chrono::minutes(1)) {
      log_->warn("http: refused {} {} from {} (no valid bearer token){}", req.method, req.path, req.remote_addr,
                 refused_ > 1 ? " (" + std::to_string(refused_) + " refused since the last line)" : "");
      last_line_ = now;
      refused_ = 0;
    }
    return false;
  }

 private:
  const std::string token_;
  const std::shared_ptr<spdlog::logger> log_;
  std::mutex mutex_;
  std::chrono::steady_clock::time_point last_line_{};
  int refused_ = 0;
};

}  // namespace

bool loopback_listen(const std::string& listen) {
  const auto parsed = parse_listen(listen);
  return parsed && loopback_host(parsed->host);
}

struct HttpServer::Impl {
  httplib::Server server;
  std::thread thread;
  std::string url;
};

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() {
  impl_->server.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

std::string HttpServer::url() const { return impl_->url; }

Result<std::unique_ptr<HttpServer>> HttpServer::start(const std::string& listen, std::vector<Route> routes,
                                                      std::string token, std::string log_component) {
  auto address = parse_listen(listen);
  if (!address) return address.error();
  if (token.empty() && !loopback_host(address->host)) {
    return make_error("'" + listen + "': the status page listens on loopback only unless it has a bearer token "
                      "(a consortium kit); use 127.0.0.1:PORT and a reverse proxy, or start with --kit");
  }
  auto impl = std::make_unique<Impl>();
  auto& server = impl->server;
  server.new_task_queue = [] { return new httplib::ThreadPool(4); };
  server.set_payload_max_length(1 << 16);
  server.set_read_timeout(10, 0);
  server.set_write_timeout(10, 0);
  // SO_REUSEADDR only: the library's default adds SO_REUSEPORT, with which a second process
  // could bind the same port and silently take half the requests.
  server.set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  auto log = log::get(log_component);

  auto compiled = std::make_shared<std::vector<std::pair<std::regex, Route>>>();
  for (auto& r : routes) compiled->emplace_back(std::regex(r.pattern), std::move(r));

  auto gate = std::make_shared<TokenGate>(token, log);
  auto serve = [compiled, token, gate, log](const httplib::Request& req, httplib::Response& res) {
    res.set_header("Cache-Control", "no-store");
    res.set_header("X-Content-Type-Options", "nosniff");
    res.set_header("Referrer-Policy", "no-referrer");
    const auto route = std::find_if(compiled->begin(), compiled->end(),
                                    [&](const auto& r) { return std::regex_match(req.path, r.first); });
    const bool open = route != compiled->end() && route->second.open;
    if (!token.empty() && !open && !gate->admit(req, res, route != compiled->end())) return;
    if (route != compiled->end()) {
      std::smatch m;
      std::regex_match(req.path, m, route->first);
      HttpRequest request;
      request.path = req.path;
      for (const auto& g : m) request.matches.push_back(g.str());
      for (const auto& [k, v] : req.params) request.params[k] = v;
      HttpResponse response;
      try {
        response = route->second.handler(request);
      } catch (const std::exception& e) {  // one bad request never takes the service down
        log->error("http: {} failed: {}", req.path, e.what());
        response = {500, "application/json", "{\"error\": \"internal error\"}"};
      }
      res.status = response.status;
      if (response.content_type.rfind("text/html", 0) == 0) res.set_header("Content-Security-Policy", kPagePolicy);
      res.set_content(response.body, response.content_type.c_str());
      return;
    }
    res.status = 404;
    res.set_content("{\"error\": \"no such page\"}", "application/json");
  };
  server.Get(".*", serve);

  if (address->port == 0) {
    const int port = server.bind_to_any_port(address->host);
    if (port < 0) return make_error("cannot listen on '" + listen + "'");
    address->port = port;
  } else if (!server.bind_to_port(address->host, address->port)) {
    return make_error("cannot listen on '" + listen + "' (in use, or not an address of this machine)");
  }
  const bool v6 = address->host.find(':') != std::string::npos;
  impl->url = "http://" + (v6 ? "[" + address->host + "]" : address->host) + ":" + std::to_string(address->port);
  auto* raw = &impl->server;
  impl->thread = std::thread([raw] { raw->listen_after_bind(); });
  log->info("http: listening on {}{}", impl->url, token.empty() ? "" : " (bearer token required)");
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

}  // namespace fedda::monitoring
