#pragma once
// A PACS as a site's data source, over DICOMweb: QIDO-RS finds the studies and series, WADO-RS
// retrieves their instances into the site's cache, where the DICOM layout's checks and
// conversion take over (subject_index.h, data_layout pacs); STOW-RS stores results back, which
// only store_to_pacs does, and the agent calls it only where the site's policy says write_back.
// Plain HTTP with basic authentication (cpp-httplib stays inside the .cpp); a PACS
// reached over TLS needs a TLS proxy on loopback for now.

#include <filesystem>
#include <regex>
#include <string>
#include <vector>

#include "fedda/common/result.h"

namespace fedda::imaging {

struct PacsSource {
  std::string dicomweb;         // the DICOMweb root: http://HOST:PORT/PATH (Orthanc's: http://HOST:8042/dicom-web)
  std::string user, password;   // HTTP basic authentication; empty user: none
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

// Retrieves every instance of the series of `pacs.modality` whose SeriesDescription matches one
// of `series_rules`, in the studies `pacs` selects, into `folder`/<StudyInstanceUID>/<SeriesInstanceUID>/
// <SOPInstanceUID>.dcm (each through a temporary name; an instance already there is not fetched
// again). Error names the URL and the PACS's answer (HTTP status and the start of its body) or
// why it could not be reached.
Result<PacsRetrieval> retrieve_from_pacs(const PacsSource& pacs, const std::vector<std::regex>& series_rules,
                                         const std::filesystem::path& folder);

// Stores `files` (DICOM files: a Segmentation, a report) with one STOW-RS request. Error names
// the URL and the PACS's answer, or each instance it refused.
Status store_to_pacs(const PacsSource& pacs, const std::vector<std::filesystem::path>& files);

}  // namespace fedda::imaging
