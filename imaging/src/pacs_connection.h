#pragma once
// What fedda asks of a PACS, whichever protocol it asks in (private to the imaging library):
// pacs.cpp answers it over DICOMweb, pacs_dimse.cpp over DIMSE, and the walk over studies,
// series and instances that retrieve_from_pacs makes is written once, over this interface.

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "fedda/common/result.h"
#include "fedda/imaging/pacs.h"

namespace fedda::imaging::detail {

struct PacsSeries {
  std::string uid, description, modality;
};

class PacsConnection {
 public:
  virtual ~PacsConnection() = default;
  // Study Instance UIDs of the studies the source's filter selects (modality, dates), narrowed
  // to one accession number unless it is empty.
  virtual Result<std::vector<std::string>> studies(const std::string& accession_number) = 0;
  virtual Result<std::vector<PacsSeries>> series(const std::string& study) = 0;
  // SOP Instance UIDs of one series.
  virtual Result<std::vector<std::string>> instances(const std::string& study, const std::string& series) = 0;
  // Brings the `missing` instances of one series into `folder` as <SOPInstanceUID>.dcm, each
  // through a temporary name; how many it wrote.
  virtual Result<int> retrieve(const std::string& study, const std::string& series, const std::vector<std::string>& missing,
                               const std::filesystem::path& folder) = 0;
  virtual Status store(const std::vector<std::filesystem::path>& files) = 0;
};

// The DIMSE side (pacs_dimse.cpp); the source is validated.
std::unique_ptr<PacsConnection> dimse_connection(const PacsSource& pacs);

// An AE_TITLE@HOST:PORT address, split; error names what is wrong with it.
struct DimseAddress {
  std::string ae, host;
  int port = 0;
};
Result<DimseAddress> dimse_address(const std::string& text);

// A UID as a file or URL component: digits and dots only (a PACS's answer is not trusted to be).
bool is_uid(const std::string& uid);

}  // namespace fedda::imaging::detail
