#include "fedda/imaging/pacs.h"

#include <chrono>
#include <cstdio>
#include <thread>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "fedda/common/files.h"

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

// A UID as a file or URL component: digits and dots only (a PACS's answer is not trusted to be).
bool is_uid(const std::string& uid) {
  return !uid.empty() && uid.size() <= 64 && uid.find_first_not_of("0123456789.") == std::string::npos && uid.front() != '.';
}

// The first value of a DICOM JSON attribute (PS3.18 F.2), "" when absent.
std::string first_value(const json& dataset, const char* tag) {
  if (!dataset.is_object()) return "";
  const auto it = dataset.find(tag);
  if (it == dataset.end() || !it->is_object()) return "";
  const auto value = it->find("Value");
  if (value == it->end() || !value->is_array() || value->empty()) return "";
  const auto& v = value->front();
  return v.is_string() ? v.get<std::string>() : v.dump();
}

// The DICOMweb root split into what httplib connects to and the path prefix.
struct Endpoint {
  std::string host;
  int port = 80;
  std::string prefix;  // without a trailing '/'
};

Result<Endpoint> endpoint_of(const std::string& url) {
  const std::string scheme = "http://";
  if (url.rfind("https://", 0) == 0) {
    return make_error("pacs dicomweb " + url + ": https is not supported yet; reach the PACS through a TLS proxy on "
                      "this server's loopback (for example stunnel) and give its http://127.0.0.1 address");
  }
  if (url.rfind(scheme, 0) != 0) return make_error("pacs dicomweb '" + url + "' is not an http:// URL");
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
  e.host = authority.substr(0, colon);
  if (colon != std::string::npos) {
    const auto port = authority.substr(colon + 1);
    if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos) {
      return make_error("pacs dicomweb '" + url + "': the port is not a number");
    }
    e.port = std::stoi(port);
  }
  if (e.host.empty() || e.port <= 0 || e.port > 65535) return make_error("pacs dicomweb '" + url + "' names no host and port");
  return e;
}

class DicomWeb {
 public:
  DicomWeb(const PacsSource& pacs, Endpoint e) : pacs_(pacs), endpoint_(std::move(e)), client_(endpoint_.host, endpoint_.port) {
    client_.set_connection_timeout(10);
    client_.set_read_timeout(120);
    if (!pacs_.user.empty()) client_.set_basic_auth(pacs_.user, pacs_.password);
  }

  // GET of `path` (under the root) with `accept`; retried while the PACS is unreachable or
  // answers 5xx. Error: the URL and the answer.
  Result<httplib::Response> get(const std::string& path, const std::string& accept) {
    const std::string url = pacs_.dicomweb + path;
    std::string failure;
    for (int attempt = 0; attempt < std::max(1, pacs_.attempts); ++attempt) {
      if (attempt) std::this_thread::sleep_for(std::chrono::milliseconds(500 << (attempt - 1)));
      auto r = client_.Get((endpoint_.prefix + path).c_str(), httplib::Headers{{"Accept", accept}});
      if (!r) {
        failure = "cannot reach the PACS (" + httplib::to_string(r.error()) + ")";
        continue;
      }
      if (r->status >= 200 && r->status < 300) return *r;
      failure = answer(*r);
      if (r->status < 500) break;  // the request itself is refused: asking again changes nothing
    }
    return make_error("pacs " + url + ": " + failure);
  }

  static std::string answer(const httplib::Response& r) {
    return "the PACS answered " + std::to_string(r.status) + (r.status == 401 ? " (wrong or missing credentials)" : "") +
           (r.body.empty() ? "" : ": " + r.body.substr(0, std::min<std::size_t>(r.body.find('\n'), 200)));
  }

  Result<json> query(const std::string& path) {
    auto r = get(path, "application/dicom+json");
    if (!r) return r.error();
    if (r->status == 204 || r->body.empty()) return json::array();
    try {
      auto j = json::parse(r->body);
      if (!j.is_array()) throw std::runtime_error("not a JSON array");
      return j;
    } catch (const std::exception& e) {
      return make_error("pacs " + pacs_.dicomweb + path + ": not a QIDO-RS answer (" + e.what() + ")");
    }
  }

  // POST of a multipart/related body of DICOM files to `path`; retried as get is.
  Result<httplib::Response> post_dicom(const std::string& path, const std::vector<std::string>& instances) {
    std::string boundary = "fedda-stow-boundary-7f3a9c";
    for (const auto& bytes : instances) {
      while (bytes.find(boundary) != std::string::npos) boundary += "x";  // never inside a part
    }
    std::string body;
    for (const auto& bytes : instances) body += "--" + boundary + "\r\nContent-Type: application/dicom\r\n\r\n" + bytes + "\r\n";
    body += "--" + boundary + "--\r\n";
    const std::string type = "multipart/related; type=\"application/dicom\"; boundary=" + boundary;
    const std::string url = pacs_.dicomweb + path;
    std::string failure;
    for (int attempt = 0; attempt < std::max(1, pacs_.attempts); ++attempt) {
      if (attempt) std::this_thread::sleep_for(std::chrono::milliseconds(500 << (attempt - 1)));
      auto r = client_.Post((endpoint_.prefix + path).c_str(), httplib::Headers{{"Accept", "application/dicom+json"}}, body, type.c_str());
      if (!r) {
        failure = "cannot reach the PACS (" + httplib::to_string(r.error()) + ")";
        continue;
      }
      if (r->status >= 200 && r->status < 300) return *r;
      failure = answer(*r) + refused_instances(r->body);
      if (r->status < 500) break;
    }
    return make_error("pacs " + url + ": " + failure);
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

// The retrieval itself; retrieve_from_pacs turns what it throws into an error.
Result<PacsRetrieval> retrieve(const PacsSource& pacs, const std::vector<std::regex>& series_rules, const fs::path& folder) {
  auto endpoint = endpoint_of(pacs.dicomweb);
  if (!endpoint) return endpoint.error();
  DicomWeb web(pacs, *endpoint);
  std::string filter = "?ModalitiesInStudy=" + percent_encoded(pacs.modality);
  if (!pacs.study_dates.empty()) filter += "&StudyDate=" + percent_encoded(pacs.study_dates);
  std::vector<std::string> queries;
  if (pacs.accession_numbers.empty()) queries.push_back(filter);
  for (const auto& a : pacs.accession_numbers) queries.push_back(filter + "&AccessionNumber=" + percent_encoded(a));
  PacsRetrieval out;
  for (const auto& q : queries) {
    auto studies = web.query("/studies" + q);
    if (!studies) return studies.error();
    for (const auto& study : *studies) {
      const auto study_uid = first_value(study, "0020000D");
      if (!is_uid(study_uid)) continue;
      ++out.studies;
      out.study_uids.push_back(study_uid);
      auto series_list = web.query("/studies/" + study_uid + "/series");
      if (!series_list) return series_list.error();
      for (const auto& series : *series_list) {
        const auto series_uid = first_value(series, "0020000E");
        const auto description = first_value(series, "0008103E");
        const auto modality = first_value(series, "00080060");
        if (!modality.empty() && modality != pacs.modality) continue;  // a Segmentation or report in the study
        bool wanted = false;
        for (const auto& rule : series_rules) wanted = wanted || std::regex_search(description, rule);
        if (!is_uid(series_uid) || !wanted) continue;
        ++out.series;
        const std::string series_path = "/studies/" + study_uid + "/series/" + series_uid;
        auto instances = web.query(series_path + "/instances");
        if (!instances) return instances.error();
        const auto where = folder / study_uid / series_uid;
        std::error_code ec;
        fs::create_directories(where, ec);
        if (ec) return make_error(where.string() + ": " + ec.message());
        for (const auto& instance : *instances) {
          const auto sop = first_value(instance, "00080018");
          if (!is_uid(sop)) continue;
          ++out.instances;
          const auto file = where / (sop + ".dcm");
          if (fs::exists(file, ec)) continue;
          auto bytes = web.instance(series_path + "/instances/" + sop);
          if (!bytes) return bytes.error();
          if (auto st = files::write_atomically(file, *bytes); !st) return st.error();
          ++out.retrieved;
        }
      }
    }
  }
  return out;
}

}  // namespace

Result<PacsRetrieval> retrieve_from_pacs(const PacsSource& pacs, const std::vector<std::regex>& series_rules,
                                         const fs::path& folder) {
  try {
    return retrieve(pacs, series_rules, folder);
  } catch (const std::exception& e) {  // an answer of a shape no check above foresaw
    return make_error("pacs " + pacs.dicomweb + ": an answer fedda cannot read (" + std::string(e.what()) + ")");
  }
}

Status store_to_pacs(const PacsSource& pacs, const std::vector<fs::path>& files) {
  auto endpoint = endpoint_of(pacs.dicomweb);
  if (!endpoint) return endpoint.error();
  std::vector<std::string> instances;
  for (const auto& f : files) {
    auto bytes = files::read_all(f);
    if (!bytes) return bytes.error();
    instances.push_back(std::move(*bytes));
  }
  DicomWeb web(pacs, *endpoint);
  auto r = web.post_dicom("/studies", instances);
  if (!r) return r.error();
  // PS3.18 10.5.3: a 200 may still list instances it refused.
  if (const auto refused = DicomWeb::refused_instances(r->body); !refused.empty()) {
    return make_error("pacs " + pacs.dicomweb + "/studies: the PACS stored only part of " + std::to_string(files.size()) +
                      " instances" + refused);
  }
  return Status::success();
}

}  // namespace fedda::imaging
