#pragma once
// A real PACS for tests: Debian's Orthanc with its DICOMweb plugin, started on loopback with a
// generated configuration (HTTP and DICOM ports on 127.0.0.1, authentication on, storage in a
// scratch folder, one known DICOM caller: AE title FEDDA), loaded through its REST API. And a
// real TLS front for it: Debian's stunnel with a certificate made by the openssl command
// (Debian 12's Orthanc 1.10.1 ends with a segmentation fault on its first HTTPS request when
// its own SslEnabled is on, so a hospital puts a TLS proxy before it, as the test does).

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include <httplib.h>

#include "support/process.h"

namespace fedda::testing {

// A TCP port on 127.0.0.1 free a moment ago (the kernel's choice for port 0).
inline int free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t n = sizeof a;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &n);
  ::close(fd);
  return ntohs(a.sin_port);
}

class Orthanc {
 public:
  static constexpr const char* kUser = "fedda";
  static constexpr const char* kPassword = "pacs-secret";

  explicit Orthanc(const std::filesystem::path& dir) : dir_(dir) { start(); }

  // Starts Orthanc on ports free a moment before; tried again on new ports (up to three times)
  // when it exits early, as it does when another process took a port in between.
  void start() {
    for (int attempt = 0; attempt < 3 && !up_now(); ++attempt) launch();
  }
  void stop() {
    if (process_) process_->signal(SIGTERM);
    if (process_) process_->wait(std::chrono::seconds(30));
    process_.reset();
  }
  ~Orthanc() { stop(); }

  bool up() { return up_now(); }
  int http_port() const { return http_port_; }
  std::string dicomweb() const { return "http://127.0.0.1:" + std::to_string(http_port_) + "/dicom-web"; }
  // Its DICOM service, as site.yaml's pacs: {dimse: ...} names it; it answers C-FIND and C-GET
  // from the AE title FEDDA only.
  std::string dimse() const { return "ORTHANC@127.0.0.1:" + std::to_string(dicom_port_); }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", http_port_);
    c.set_basic_auth(kUser, kPassword);
    return c;
  }
  // Stores every file under `folder` (POST /instances); the number Orthanc took.
  int upload(const std::filesystem::path& folder) {
    int stored = 0;
    auto c = client();
    for (const auto& e : std::filesystem::recursive_directory_iterator(folder)) {
      if (!e.is_regular_file() || e.path().extension() != ".dcm") continue;
      std::ifstream in(e.path(), std::ios::binary);
      const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      auto r = c.Post("/instances", bytes, "application/dicom");
      stored += r && r->status == 200;
    }
    return stored;
  }
  std::filesystem::path log() const { return dir_ / "orthanc.log"; }

 private:
  bool up_now() const { return process_ && static_cast<bool>(client().Get("/system")); }
  void launch() {
    process_.reset();
    http_port_ = free_loopback_port();
    dicom_port_ = free_loopback_port();
    std::filesystem::create_directories(dir_ / "storage");
    std::ofstream(dir_ / "orthanc.json") << R"({"Name": "fedda-test", "StorageDirectory": ")" << (dir_ / "storage").string()
                                         << R"(", "IndexDirectory": ")" << (dir_ / "storage").string() << R"(", "HttpPort": )"
                                         << http_port_ << R"(, "DicomPort": )" << dicom_port_
                                         << R"(, "RemoteAccessAllowed": false, "AuthenticationEnabled": true,)"
                                         << R"( "RegisteredUsers": {")" << kUser << R"(": ")" << kPassword << R"("},)"
                                         << R"( "DicomAet": "ORTHANC", "DicomModalities": {"fedda": ["FEDDA", "127.0.0.1", 104]},)"
                                         << R"( "DicomAlwaysAllowFind": false, "DicomAlwaysAllowGet": false,)"
                                         << R"( "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],)"
                                         << R"( "DicomWeb": {"Enable": true, "Root": "/dicom-web/"}})";
    process_ = std::make_unique<Process>(std::vector<std::string>{"/usr/sbin/Orthanc", (dir_ / "orthanc.json").string()},
                                         dir_ / "orthanc.log");
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < until && process_->running() && !client().Get("/system")) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }

  std::filesystem::path dir_;
  int http_port_ = 0;
  int dicom_port_ = 0;
  std::unique_ptr<Process> process_;
};

// A self-signed certificate for 127.0.0.1 (openssl req): `name`.pem holds the certificate (what
// a client trusts), `name`-key.pem the certificate and its key (what a server presents).
inline bool make_loopback_certificate(const std::filesystem::path& dir, const std::string& name) {
  std::filesystem::create_directories(dir);
  const auto cert = (dir / (name + ".pem")).string();
  const auto key = (dir / (name + ".key")).string();
  const std::string command = "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -keyout '" +
                              key + "' -out '" + cert + "' > '" + (dir / (name + ".log")).string() + "' 2>&1 && cat '" + cert + "' '" + key +
                              "' > '" + (dir / (name + "-key.pem")).string() + "' && chmod 600 '" + (dir / (name + "-key.pem")).string() + "'";
  return std::system(command.c_str()) == 0;
}

// stunnel on 127.0.0.1 presenting `certificate_and_key` and passing the plain bytes on to
// 127.0.0.1:`to`: https in front of a PACS that speaks http.
class TlsProxy {
 public:
  TlsProxy(const std::filesystem::path& dir, const std::filesystem::path& certificate_and_key, int to) : dir_(dir) {
    for (int attempt = 0; attempt < 3 && !up(); ++attempt) {
      port_ = free_loopback_port();
      std::ofstream(dir_ / "stunnel.conf") << "foreground = yes\npid =\n[pacs]\naccept = 127.0.0.1:" << port_
                                           << "\nconnect = 127.0.0.1:" << to << "\ncert = " << certificate_and_key.string() << "\n";
      process_ = std::make_unique<Process>(std::vector<std::string>{"/usr/bin/stunnel", (dir_ / "stunnel.conf").string()},
                                           dir_ / "stunnel.log");
      const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(15);
      while (std::chrono::steady_clock::now() < until && process_->running() && !up()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
  }
  ~TlsProxy() {
    if (process_) process_->signal(SIGTERM);
    if (process_) process_->wait(std::chrono::seconds(10));
  }
  int port() const { return port_; }
  bool up() const {
    if (!process_ || !process_->running()) return false;
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port_));
    const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(fd);
    return ok;
  }
  std::filesystem::path log() const { return dir_ / "stunnel.log"; }

 private:
  std::filesystem::path dir_;
  int port_ = 0;
  std::unique_ptr<Process> process_;
};

}  // namespace fedda::testing
