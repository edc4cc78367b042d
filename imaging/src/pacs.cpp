#include "fedda/imaging/pacs.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <chrono>
#include <cstdio>
#include <functional>
#include <set>
#include <thread>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "fedda/common/files.h"
#include "pacs_connection.h"

namespace fedda::imaging {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::string percent_encoded(const std::string& text) {
  std::string out;
  for (const unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      char hex[4];
      std::snprintf(hex, sizeof hex, "%%%02X", c);
      out += hex;
    }
  }
  return out;
}

// The Value array of a DICOM JSON attribute (PS3.18 F.2); null when absent or not an array.
const json* value_array(const json& dataset, const char* tag) {
  if (!dataset.is_object()) return nullptr;
  const auto it = dataset.find(tag);
  if (it == dataset.end() || !it->is_object()) return nullptr;
  const auto value = it->find("Value");
  return value == it->end() || !value->is_array() ? nullptr : &*value;
}

// The first value of a DICOM JSON attribute, "" when absent.
std::string first_value(const json& dataset, const char* tag) {
  const auto* value = value_array(dataset, tag);
  if (value == nullptr || value->empty()) return "";
  const auto& v = value->front();
  return v.is_string() ? v.get<std::string>() : v.dump();
}

// Every string value of a DICOM JSON attribute (a multi-valued one such as ModalitiesInStudy).
std::vector<std::string> all_values(const json& dataset, const char* tag) {
  std::vector<std::string> out;
  if (const auto* value = value_array(dataset, tag)) {
    for (const auto& v : *value) {
      if (v.is_string()) out.push_back(v.get<std::string>());
    }
  }
  return out;
}

// A TCP port written as text: 1 to 5 digits, 1-65535; 0 when it is not one.
int port_number(const std::string& digits) {
  if (digits.empty() || digits.size() > 5 || digits.find_first_not_of("0123456789") != std::string::npos) return 0;
  const int port = std::stoi(digits);
  return port <= 65535 ? port : 0;
}

// The DICOMweb root split into what httplib connects to and the path prefix.
struct Endpoint {
  std::string scheme_host_port;  // http://HOST:PORT or https://HOST:PORT
  std::string prefix;            // without a trailing '/'
};

Result<Endpoint> endpoint_of(const std::string& url) {
  const bool tls = url.rfind("https://", 0) == 0;
  const std::string scheme = tls ? "https://" : "http://";
  if (url.rfind(scheme, 0) != 0) return make_error("pacs dicomweb '" + url + "' is not an http:// or https:// URL");
  const auto rest = url.substr(scheme.size());
  const auto slash = rest.find('/');
  const auto authority = rest.substr(0, slash);
  if (authority.find('@') != std::string::npos) {
    return make_error("pacs dicomweb: a user or password in the URL is refused (it would be logged); put them in "
                      "credentials_file");
  }
  Endpoint e;
  e.prefix = slash == std::string::npos ? "" : rest.substr(slash);
  while (!e.prefix.empty() && e.prefix.back() == '/') e.prefix.pop_back();
  const auto colon = authority.rfind(':');
  const auto host = authority.substr(0, colon);
  const int port = colon == std::string::npos ? (tls ? 443 : 80) : port_number(authority.substr(colon + 1));
  if (port == 0) return make_error("pacs dicomweb '" + url + "': the port is not a number from 1 to 65535");
  if (host.empty()) return make_error("pacs dicomweb '" + url + "' names no host and port");
  e.scheme_host_port = scheme + host + ":" + std::to_string(port);
  return e;
}

class DicomWeb {
 public:
  DicomWeb(const PacsSource& pacs, Endpoint e) : pacs_(pacs), endpoint_(std::move(e)), client_(endpoint_.scheme_host_port) {
    client_.set_connection_timeout(10);
    client_.set_read_timeout(120);
    if (!pacs_.user.empty()) client_.set_basic_auth(pacs_.user, pacs_.password);
    if (!pacs_.ca_file.empty()) client_.set_ca_cert_path(pacs_.ca_file);
  }

  // GET of `path` (under the root) with `accept`; retried as `send` retries.
  Result<httplib::Response> get(const std::string& path, const std::string& accept) {
    return send(path, [&] { return client_.Get((endpoint_.prefix + path).c_str(), httplib::Headers{{"Accept", accept}}); });
  }

  // `request` (one GET or POST of `path`), tried again 0.5 s, 1 s, ... apart while the PACS
  // cannot be reached or answers 5xx; an answer refusing the request itself, or a certificate
  // that is not trusted, is not asked again. Error: the URL and the answer.
  Result<httplib::Response> send(const std::string& path, const std::function<httplib::Result()>& request) {
    std::string failure;
    for (int attempt = 0; attempt < std::max(1, pacs_.attempts); ++attempt) {
      if (attempt) std::this_thread::sleep_for(std::chrono::milliseconds(500 << (attempt - 1)));
      auto r = request();
      if (!r) {
        failure = unreachable(r.error());
        if (r.error() == httplib::Error::SSLServerVerification || r.error() == httplib::Error::SSLLoadingCerts) break;
        continue;
      }
      if (r->status >= 200 && r->status < 300) return *r;
      failure = answer(*r) + refused_instances(r->body);
      if (r->status < 500) break;
    }
    return make_error("pacs " + pacs_.dicomweb + path + ": " + failure);
  }

  std::string unreachable(httplib::Error error) const {
    if (error == httplib::Error::SSLServerVerification) {
      return "the PACS's TLS certificate is not trusted (checked against " +
             (pacs_.ca_file.empty() ? std::string("the system's CA certificates; name its CA in ca_file") : "ca_file " + pacs_.ca_file) +
             ")";
    }
    if (error == httplib::Error::SSLLoadingCerts) return "cannot load the CA certificates of ca_file " + pacs_.ca_file;
    if (error == httplib::Error::SSLConnection) return "cannot reach the PACS (no TLS session: " + httplib::to_string(error) + ")";
    return "cannot reach the PACS (" + httplib::to_string(error) + ")";
  }

  static std::string answer(const httplib::Response& r) {
    return "the PACS answered " + std::to_string(r.status) + (r.status == 401 ? " (wrong or missing credentials)" : "") +
           (r.body.empty() ? "" : ": " + r.body.substr(0, std::min<std::size_t>(r.body.find('\n'), 200)));
  }

  // Every match of a QIDO-RS query, asked page_size at a time (limit, offset) until a page
  // comes back short (or a page adds no `key` not seen: a server that ignores offset).
  Result<json> query(const std::string& path, const char* key) {
    json all = json::array();
    std::set<std::string> seen;
    const std::string limit = std::to_string(std::max(1, pacs_.page_size));
    for (std::size_t offset = 0;;) {
      const auto page_path = path + (path.find('?') == std::string::npos ? "?" : "&") + "limit=" + limit +
                             "&offset=" + std::to_string(offset);
      auto r = get(page_path, "application/dicom+json");
      if (!r) return r.error();
      if (r->status == 204 || r->body.empty()) break;
      json page;
      try {
        page = json::parse(r->body);
        if (!page.is_array()) throw std::runtime_error("not a JSON array");
      } catch (const std::exception& e) {
        return make_error("pacs " + pacs_.dicomweb + page_path + ": not a QIDO-RS answer (" + e.what() + ")");
      }
      std::size_t added = 0;
      for (auto& match : page) {
        if (seen.insert(first_value(match, key)).second) {
          all.push_back(std::move(match));
          ++added;
        }
      }
      // PS3.18 8.3.4.6: a server that returns fewer than it holds may say so in a Warning.
      const bool more = r->get_header_value("Warning").find("dditional results") != std::string::npos;
      const bool full = page.size() >= static_cast<std::size_t>(pacs_.page_size);
      if (added == 0 && offset > 0 && (full || more)) {
        return make_error("pacs " + pacs_.dicomweb + page_path + ": the PACS answered offset " + std::to_string(offset) +
                          " with matches it had sent already (it ignores offset); raise page_size above the number of matches");
      }
      if (added == 0 || (!full && !more)) break;
      offset += page.size();
    }
    return all;
  }

  // POST of a multipart/related body of DICOM files to `path`; retried as `send` retries.
  Result<httplib::Response> post_dicom(const std::string& path, const std::vector<std::string>& instances) {
    std::string boundary = "fedda-stow-boundary-7f3a9c";
    for (const auto& bytes : instances) {
      while (bytes.find(boundary) != std::string::npos) boundary += "x";  // never inside a part
    }
    std::string body;
    for (const auto& bytes : instances) body += "--" + boundary + "\r\nContent-Type: application/dicom\r\n\r\n" + bytes + "\r\n";
    body += "--" + boundary + "--\r\n";
    const std::string type = "multipart/related; type=\"application/dicom\"; boundary=" + boundary;
    return send(path, [&] {
      return client_.Post((endpoint_.prefix + path).c_str(), httplib::Headers{{"Accept", "application/dicom+json"}}, body, type.c_str());
    });
  }

  // The instances a STOW-RS answer lists as failed (Failed SOP Sequence (0008,1198): the SOP
  // instance (0008,1155) and its Failure Reason (0008,1197)), as "; refused UID (reason N)";
  // empty when it lists none.
  static std::string refused_instances(const std::string& body) {
    std::string out;
    try {
      const auto j = json::parse(body);
      if (!j.is_object() || !j.contains("00081198") || !j["00081198"].is_object()) return "";
      const auto& failed = j["00081198"];
      if (!failed.contains("Value") || !failed["Value"].is_array()) return "";
      for (const auto& item : failed["Value"]) {
        out += "; refused " + first_value(item, "00081155") + " (failure reason " + first_value(item, "00081197") + ")";
      }
    } catch (const json::exception&) {
    }
    return out;
  }

  // The first part of a WADO-RS multipart/related answer: one instance's DICOM bytes.
  Result<std::string> instance(const std::string& path) {
    auto r = get(path, "multipart/related; type=\"application/dicom\"");
    if (!r) return r.error();
    const auto type = r->get_header_value("Content-Type");
    std::string lower = type;
    for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    const auto at = lower.find("boundary=");
    if (at == std::string::npos) return make_error("pacs " + pacs_.dicomweb + path + ": answer is not multipart (" + type + ")");
    std::string boundary = type.substr(at + 9);
    boundary = boundary.substr(0, boundary.find(';'));
    while (!boundary.empty() && (boundary.back() == ' ' || boundary.back() == '\t')) boundary.pop_back();
    if (boundary.size() >= 2 && boundary.front() == '"' && boundary.back() == '"') boundary = boundary.substr(1, boundary.size() - 2);
    if (boundary.empty()) return make_error("pacs " + pacs_.dicomweb + path + ": a multipart answer without a boundary");
    const auto& body = r->body;
    const auto start = body.find("--" + boundary);
    const auto headers_end = start == std::string::npos ? std::string::npos : body.find("\r\n\r\n", start);
    const auto end = headers_end == std::string::npos ? std::string::npos : body.find("\r\n--" + boundary, headers_end + 4);
    if (end == std::string::npos) return make_error("pacs " + pacs_.dicomweb + path + ": a multipart answer without a whole part");
    auto bytes = body.substr(headers_end + 4, end - headers_end - 4);
    if (bytes.size() < 132 || bytes.compare(128, 4, "DICM") != 0) {
      return make_error("pacs " + pacs_.dicomweb + path + ": the part is not a DICOM file");
    }
    return bytes;
  }

 private:
  const PacsSource& pacs_;
  Endpoint endpoint_;
  httplib::Client client_;
};

// The DICOMweb side of what fedda asks of a PACS.
class DicomWebConnection final : public detail::PacsConnection {
 public:
  DicomWebConnection(const PacsSource& pacs, Endpoint e) : pacs_(pacs), web_(pacs, std::move(e)) {}

  // The modality is matched here, not by the PACS: Orthanc 1.10's DICOMweb plugin answers a
  // ModalitiesInStudy query with limit and offset with its first page only (every later page
  // empty), which would drop studies without a word.
  Result<std::vector<std::string>> studies(const std::string& accession_number) override {
    std::string filter = "?includefield=00080061";
    if (!pacs_.study_dates.empty()) filter += "&StudyDate=" + percent_encoded(pacs_.study_dates);
    if (!accession_number.empty()) filter += "&AccessionNumber=" + percent_encoded(accession_number);
    auto found = web_.query("/studies" + filter, "0020000D");
    if (!found) return found.error();
    std::vector<std::string> out;
    for (const auto& study : *found) {
      const auto modalities = all_values(study, "00080061");
      // A PACS that leaves ModalitiesInStudy out: the series' own Modality decides later.
      if (modalities.empty() || std::find(modalities.begin(), modalities.end(), pacs_.modality) != modalities.end()) {
        out.push_back(first_value(study, "0020000D"));
      }
    }
    return out;
  }

  Result<std::vector<detail::PacsSeries>> series(const std::string& study) override {
    auto found = web_.query("/studies/" + study + "/series", "0020000E");
    if (!found) return found.error();
    std::vector<detail::PacsSeries> out;
    for (const auto& s : *found) out.push_back({first_value(s, "0020000E"), first_value(s, "0008103E"), first_value(s, "00080060")});
    return out;
  }

  Result<std::vector<std::string>> instances(const std::string& study, const std::string& series) override {
    auto found = web_.query("/studies/" + study + "/series/" + series + "/instances", "00080018");
    if (!found) return found.error();
    std::vector<std::string> out;
    for (const auto& instance : *found) out.push_back(first_value(instance, "00080018"));
    return out;
  }

  Result<int> retrieve(const std::string& study, const std::string& series, const std::vector<std::string>& missing,
                       const fs::path& folder) override {
    int written = 0;
    for (const auto& sop : missing) {
      auto bytes = web_.instance("/studies/" + study + "/series/" + series + "/instances/" + sop);
      if (!bytes) return bytes.error();
      if (auto st = files::write_atomically(folder / (sop + ".dcm"), *bytes); !st) return st.error();
      ++written;
    }
    return written;
  }

  Status store(const std::vector<fs::path>& files) override {
    std::vector<std::string> instances;
    for (const auto& f : files) {
      auto bytes = files::read_all(f);
      if (!bytes) return bytes.error();
      instances.push_back(std::move(*bytes));
    }
    auto r = web_.post_dicom("/studies", instances);
    if (!r) return r.error();
    // PS3.18 10.5.3: a 200 may still list instances it refused.
    if (const auto refused = DicomWeb::refused_instances(r->body); !refused.empty()) {
      return make_error("pacs " + pacs_.dicomweb + "/studies: the PACS stored only part of " + std::to_string(files.size()) +
                        " instances" + refused);
    }
    return Status::success();
  }

 private:
  const PacsSource& pacs_;
  DicomWeb web_;
};

Result<std::unique_ptr<detail::PacsConnection>> connect(const PacsSource& pacs) {
  if (auto st = validate_pacs(pacs); !st) return st.error();
  if (!pacs.dimse.empty()) return detail::dimse_connection(pacs);
  auto endpoint = endpoint_of(pacs.dicomweb);
  if (!endpoint) return endpoint.error();
  return std::unique_ptr<detail::PacsConnection>(std::make_unique<DicomWebConnection>(pacs, std::move(*endpoint)));
}

// The walk over the selection's studies, series and instances, whichever protocol answers it;
// retrieve_from_pacs turns what it throws into an error.
Result<PacsRetrieval> retrieve(const PacsSource& source, const std::vector<std::regex>& series_rules, const fs::path& folder) {
  auto pacs = connect(source);
  if (!pacs) return pacs.error();
  std::vector<std::string> accessions = source.accession_numbers;
  if (accessions.empty()) accessions.emplace_back();  // no narrowing
  PacsRetrieval out;
  std::set<std::string> seen;
  for (const auto& accession : accessions) {
    auto studies = (*pacs)->studies(accession);
    if (!studies) return studies.error();
    for (const auto& study_uid : *studies) {
      if (!detail::is_uid(study_uid) || !seen.insert(study_uid).second) continue;
      ++out.studies;
      out.study_uids.push_back(study_uid);
      auto series_list = (*pacs)->series(study_uid);
      if (!series_list) return series_list.error();
      for (const auto& series : *series_list) {
        if (!series.modality.empty() && series.modality != source.modality) continue;  // a Segmentation or report in the study
        bool wanted = false;
        for (const auto& rule : series_rules) wanted = wanted || std::regex_search(series.description, rule);
        if (!detail::is_uid(series.uid) || !wanted) continue;
        ++out.series;
        auto instances = (*pacs)->instances(study_uid, series.uid);
        if (!instances) return instances.error();
        const auto where = folder / study_uid / series.uid;
        std::error_code ec;
        fs::create_directories(where, ec);
        if (ec) return make_error(where.string() + ": " + ec.message());
        std::vector<std::string> missing;
        for (const auto& sop : *instances) {
          if (!detail::is_uid(sop)) continue;
          ++out.instances;
          if (!fs::exists(where / (sop + ".dcm"), ec)) missing.push_back(sop);
        }
        if (missing.empty()) continue;
        auto written = (*pacs)->retrieve(study_uid, series.uid, missing, where);
        if (!written) return written.error();
        out.retrieved += *written;
      }
    }
  }
  return out;
}

}  // namespace

namespace detail {

bool is_uid(const std::string& uid) {
  return !uid.empty() && uid.size() <= 64 && uid.find_first_not_of("0123456789.") == std::string::npos && uid.front() != '.';
}

Result<DimseAddress> dimse_address(const std::string& text) {
  const auto at = text.find('@');
  const auto colon = text.rfind(':');
  const auto bad = [&](const std::string& why) { return make_error("pacs dimse '" + text + "': " + why + " (AE_TITLE@HOST:PORT, e.g. ORTHANC@127.0.0.1:4242)"); };
  if (at == std::string::npos || colon == std::string::npos || colon < at) return bad("not AE_TITLE@HOST:PORT");
  DimseAddress a;
  a.ae = text.substr(0, at);
  a.host = text.substr(at + 1, colon - at - 1);
  const auto digits = text.substr(colon + 1);
  if (a.ae.empty() || a.ae.size() > 16 || a.ae.find_first_of("\\") != std::string::npos) return bad("the AE title is 1 to 16 characters without a backslash");
  for (const unsigned char c : a.ae) {
    if (c < 0x20 || c > 0x7e) return bad("the AE title is printable ASCII");
  }
  if (a.host.empty()) return bad("no host");
  a.port = port_number(digits);
  if (a.port == 0) return bad("the port is not 1-65535");
  return a;
}

}  // namespace detail

std::string pacs_location(const PacsSource& pacs) {
  return pacs.dimse.empty() ? "dicomweb " + pacs.dicomweb : "dimse " + pacs.dimse;
}

Status validate_pacs(const PacsSource& pacs) {
  if (pacs.dicomweb.empty() == pacs.dimse.empty()) {
    return make_error(pacs.dicomweb.empty() ? "pacs: needs dicomweb: URL or dimse: AE_TITLE@HOST:PORT"
                                            : "pacs: dicomweb and dimse are two ways to the PACS; give one");
  }
  if (pacs.page_size < 1) return make_error("pacs: page_size must be at least 1");
  if (!pacs.dimse.empty()) {
    if (auto a = detail::dimse_address(pacs.dimse); !a) return a.error();
    if (pacs.calling_ae.empty() || pacs.calling_ae.size() > 16) return make_error("pacs: calling_ae '" + pacs.calling_ae + "' is not 1 to 16 characters");
    if (!pacs.user.empty()) return make_error("pacs: credentials_file applies to dicomweb only (a DIMSE PACS knows its callers by AE title)");
    if (!pacs.ca_file.empty()) return make_error("pacs: ca_file applies to an https dicomweb URL only");
    return Status::success();
  }
  if (auto e = endpoint_of(pacs.dicomweb); !e) return e.error();
  if (!pacs.ca_file.empty() && pacs.dicomweb.rfind("https://", 0) != 0) return make_error("pacs: ca_file applies to an https dicomweb URL only");
  if (!pacs.ca_file.empty() && ::access(pacs.ca_file.c_str(), R_OK) != 0) {
    return make_error("pacs: ca_file " + pacs.ca_file + ": " + std::strerror(errno));
  }
  return Status::success();
}

Result<PacsRetrieval> retrieve_from_pacs(const PacsSource& pacs, const std::vector<std::regex>& series_rules,
                                         const fs::path& folder) {
  try {
    return retrieve(pacs, series_rules, folder);
  } catch (const std::exception& e) {  // an answer of a shape no check above foresaw
    return make_error("pacs " + pacs_location(pacs) + ": an answer fedda cannot read (" + std::string(e.what()) + ")");
  }
}

Status store_to_pacs(const PacsSource& pacs, const std::vector<fs::path>& files) {
  auto connection = connect(pacs);
  if (!connection) return connection.error();
  return (*connection)->store(files);
}

}  // namespace fedda::imaging
