#pragma once
// A PACS as a site's data source, over DICOMweb or DIMSE. DICOMweb: QIDO-RS finds the studies
// and series (in pages of page_size), WADO-RS retrieves their instances, STOW-RS stores results
// back; http or https (the server's certificate checked against ca_file, or the system's CAs),
// basic authentication (cpp-httplib stays inside pacs.cpp). DIMSE: C-FIND finds them, C-GET
// retrieves them, C-STORE stores back (DCMTK's dcmnet, inside pacs_dimse.cpp). Either way the
// instances land in the site's cache, where the DICOM layout's checks and conversion take over
// (subject_index.h, data_layout pacs). Only store_to_pacs writes to the PACS, and the agent
// calls it only where the site's policy says write_back.

#include <filesystem>
#include <regex>
#include <string>
#include <vector>

#include "fedda/common/result.h"

namespace fedda::imaging {

struct PacsSource {
  // Exactly one of the two:
  std::string dicomweb;         // the DICOMweb root: http(s)://HOST:PORT/PATH (Orthanc's: http://HOST:8042/dicom-web)
  std::string dimse;            // the PACS's DICOM service: AE_TITLE@HOST:PORT (Orthanc's: ORTHANC@HOST:4242)
  std::string calling_ae = "FEDDA";  // dimse: this agent's AE title, as the PACS knows it
  std::string user, password;   // dicomweb: HTTP basic authentication; empty user: none
  std::string ca_file;          // https: the CA certificates (PEM) the PACS's certificate must chain to; empty: the system's
  int page_size = 100;          // dicomweb: QIDO-RS results asked per request (limit / offset)
  std::string modality = "MR";  // studies holding a series of this modality (ModalitiesInStudy)
  std::string study_dates;      // StudyDate range, "YYYYMMDD-YYYYMMDD" (either end may be left out); empty: any
  std::vector<std::string> accession_numbers;  // only these studies; empty: any
  int attempts = 3;             // per request, 0.5 s, 1 s, ... apart, when the PACS cannot be reached or answers 5xx
};

struct PacsRetrieval {
  int studies = 0, series = 0, instances = 0;
  int retrieved = 0;                    // instances not in the cache before
  std::vector<std::string> study_uids;  // the studies the selection holds now
};

// "dicomweb URL" or "dimse AE@HOST:PORT": how errors and logs name the PACS.
std::string pacs_location(const PacsSource& pacs);

// Error when `pacs` names neither or both protocols, a malformed URL or DIMSE address, a user or
// password in the URL, or a page size below 1.
Status validate_pacs(const PacsSource& pacs);

// Retrieves every instance of the series of `pacs.modality` whose SeriesDescription matches one
// of `series_rules`, in the studies `pacs` selects, into `folder`/<StudyInstanceUID>/<SeriesInstanceUID>/
// <SOPInstanceUID>.dcm (each through a temporary name; an instance already there is not fetched
// again). Error names the URL and the PACS's answer (HTTP status and the start of its body) or
// why it could not be reached.
Result<PacsRetrieval> retrieve_from_pacs(const PacsSource& pacs, const std::vector<std::regex>& series_rules,
                                         const std::filesystem::path& folder);

// Stores `files` (DICOM files: a Segmentation, a report) with one STOW-RS request, or one
// association of C-STOREs. Error names the PACS and its answer, or each instance it refused.
Status store_to_pacs(const PacsSource& pacs, const std::vector<std::filesystem::path>& files);

}  // namespace fedda::imaging
