// A PACS over DIMSE (DCMTK's dcmnet): C-FIND at study, series and image level on the Study Root
// information model, C-GET of a series (the agent takes the C-STOREs on the same association:
// no port of its own, nothing a hospital firewall must open towards the agent), C-STORE of
// results. DCMTK's headers stay in this file.

#include <chrono>
#include <cstdio>
#include <functional>
#include <set>
#include <thread>

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dctk.h"
#include "dcmtk/dcmnet/diutil.h"
#include "dcmtk/dcmnet/scu.h"
#include "dcmtk/oflog/oflog.h"

#include "fedda/common/files.h"
#include "pacs_connection.h"

namespace fedda::imaging::detail {
namespace fs = std::filesystem;

namespace {

// At most this many missing instances are asked for by UID (a list match at image level).
constexpr std::size_t kInstancesByUid = 16;

// The storage classes a retrieved MR series may come in.
const char* const kImageClasses[] = {UID_MRImageStorage, UID_EnhancedMRImageStorage, UID_LegacyConvertedEnhancedMRImageStorage};

OFList<OFString> uncompressed_syntaxes() {
  OFList<OFString> x;
  x.push_back(UID_LittleEndianExplicitTransferSyntax);
  x.push_back(UID_LittleEndianImplicitTransferSyntax);
  return x;
}

std::string text(const OFCondition& c) { return c.text() ? c.text() : "unknown failure"; }

std::string hex_status(Uint16 status) {
  char s[8];
  std::snprintf(s, sizeof s, "0x%04X", static_cast<unsigned>(status));
  return s;
}

std::string value_of(DcmItem* item, const DcmTagKey& tag) {
  OFString v;
  if (item == nullptr || item->findAndGetOFString(tag, v).bad()) return "";
  return v.c_str();
}

// A DcmSCU that writes each instance a C-GET brings into the series' cache folder (through a
// temporary name), and only those asked for.
class Retriever : public DcmSCU {
 public:
  using DcmSCU::clearPresentationContexts;  // a new association after a lost one proposes afresh
  fs::path folder;
  std::set<std::string> wanted;
  int written = 0;
  std::string failure;

  OFCondition handleSTORERequest(const T_ASC_PresentationContextID, DcmDataset* incoming, OFBool&, Uint16& status) override {
    // DCMTK 3.6.7 hands the dataset over (scu.h: the handler "takes ownership ... deletes it"),
    // and a file format around it writes a DICOM file proper: preamble, DICM, meta header.
    DcmFileFormat file_format(incoming, OFFalse);
    const auto sop = value_of(incoming, DCM_SOPInstanceUID);
    status = STATUS_Success;
    if (!is_uid(sop) || !wanted.count(sop)) return EC_Normal;  // not asked for: taken, not kept
    const auto file = folder / (sop + ".dcm");
    std::error_code ec;
    if (fs::exists(file, ec)) return EC_Normal;
    auto st = files::write_via_temporary(file, [&](const fs::path& tmp) -> Status {
      const auto c = file_format.saveFile(tmp.c_str(), EXS_Unknown);  // in the transfer syntax it came in
      if (c.bad()) return make_error("cannot write " + tmp.string() + ": " + text(c));
      return Status::success();
    });
    if (!st) {
      failure = st.error().message;
      status = STATUS_STORE_Refused_OutOfResources;
      return EC_Normal;
    }
    ++written;
    return EC_Normal;
  }
};

void quiet_dcmnet() {
  static const bool once = [] {
    OFLog::getLogger("dcmtk.dcmnet").setLogLevel(OFLogger::FATAL_LOG_LEVEL);
    return true;
  }();
  (void)once;
}

class DimseConnection final : public PacsConnection {
 public:
  explicit DimseConnection(const PacsSource& pacs) : pacs_(pacs), address_(*dimse_address(pacs.dimse)) { quiet_dcmnet(); }
  ~DimseConnection() override {
    if (scu_.isConnected()) scu_.releaseAssociation();
  }

  Result<std::vector<std::string>> studies(const std::string& accession_number) override {
    DcmDataset q;
    q.putAndInsertOFStringArray(DCM_QueryRetrieveLevel, "STUDY");
    q.putAndInsertOFStringArray(DCM_StudyInstanceUID, "");
    q.putAndInsertOFStringArray(DCM_ModalitiesInStudy, pacs_.modality.c_str());
    q.putAndInsertOFStringArray(DCM_StudyDate, pacs_.study_dates.c_str());
    q.putAndInsertOFStringArray(DCM_AccessionNumber, accession_number.c_str());
    return find(q, DCM_StudyInstanceUID);
  }

  Result<std::vector<PacsSeries>> series(const std::string& study) override {
    DcmDataset q;
    q.putAndInsertOFStringArray(DCM_QueryRetrieveLevel, "SERIES");
    q.putAndInsertOFStringArray(DCM_StudyInstanceUID, study.c_str());
    q.putAndInsertOFStringArray(DCM_SeriesInstanceUID, "");
    q.putAndInsertOFStringArray(DCM_SeriesDescription, "");
    q.putAndInsertOFStringArray(DCM_Modality, "");
    std::vector<PacsSeries> out;
    auto found = find_items(q, [&](DcmDataset* d) {
      out.push_back({value_of(d, DCM_SeriesInstanceUID), value_of(d, DCM_SeriesDescription), value_of(d, DCM_Modality)});
    });
    if (!found) return found.error();
    return out;
  }

  Result<std::vector<std::string>> instances(const std::string& study, const std::string& series) override {
    DcmDataset q;
    q.putAndInsertOFStringArray(DCM_QueryRetrieveLevel, "IMAGE");
    q.putAndInsertOFStringArray(DCM_StudyInstanceUID, study.c_str());
    q.putAndInsertOFStringArray(DCM_SeriesInstanceUID, series.c_str());
    q.putAndInsertOFStringArray(DCM_SOPInstanceUID, "");
    return find(q, DCM_SOPInstanceUID);
  }

  Result<int> retrieve(const std::string& study, const std::string& series, const std::vector<std::string>& missing,
                       const fs::path& folder) override {
    if (auto st = associate(); !st) return st.error();
    ++requests_;
    // A few missing instances (an interrupted retrieval, a file removed) are asked for by UID
    // list at image level; more, the whole series (the handler keeps only the missing ones).
    DcmDataset q;
    const bool by_instance = missing.size() <= kInstancesByUid;
    q.putAndInsertOFStringArray(DCM_QueryRetrieveLevel, by_instance ? "IMAGE" : "SERIES");
    q.putAndInsertOFStringArray(DCM_StudyInstanceUID, study.c_str());
    q.putAndInsertOFStringArray(DCM_SeriesInstanceUID, series.c_str());
    if (by_instance) {
      std::string uids;
      for (const auto& sop : missing) uids += (uids.empty() ? "" : "\\") + sop;
      q.putAndInsertOFStringArray(DCM_SOPInstanceUID, uids.c_str());
    }
    scu_.folder = folder;
    scu_.wanted = std::set<std::string>(missing.begin(), missing.end());
    scu_.written = 0;
    scu_.failure.clear();
    OFList<RetrieveResponse*> responses;
    const auto id = scu_.findPresentationContextID(UID_GETStudyRootQueryRetrieveInformationModel, "");
    const auto c = scu_.sendCGETRequest(id, &q, &responses);
    Uint16 last = 0;
    int failed = 0;
    for (auto* r : responses) {
      last = r->m_status;
      failed = r->m_numberOfFailedSubops;
      delete r;
    }
    const std::string where = "C-GET of series " + series;
    if (c.bad()) return lost(where, c);
    if (!scu_.failure.empty()) return make_error(pacs_name() + ": " + where + ": " + scu_.failure);
    if (scu_.written < static_cast<int>(missing.size())) {
      return make_error(pacs_name() + ": " + where + " brought " + std::to_string(scu_.written) + " of the " +
                        std::to_string(missing.size()) + " instances missing here (status " + hex_status(last) + ", " +
                        std::to_string(failed) + " sub-operations failed)");
    }
    return scu_.written;
  }

  Status store(const std::vector<fs::path>& files) override {
    // An association of its own, proposing each storage class and transfer syntax the files
    // are in, once.
    DcmSCU scu;
    configure(scu);
    std::vector<std::pair<std::string, std::string>> classes;  // SOP class, transfer syntax per file
    std::set<std::pair<std::string, std::string>> proposed;
    for (const auto& f : files) {
      DcmFileFormat ff;
      if (auto c = ff.loadFile(f.c_str()); c.bad()) return make_error(f.string() + ": not a DICOM file (" + text(c) + ")");
      const auto cls = value_of(ff.getDataset(), DCM_SOPClassUID);
      const std::string xfer = DcmXfer(ff.getDataset()->getOriginalXfer()).getXferID();
      if (cls.empty()) return make_error(f.string() + ": no SOP Class UID");
      classes.emplace_back(cls, xfer);
      if (!proposed.insert(classes.back()).second) continue;
      OFList<OFString> x;
      x.push_back(xfer.c_str());
      scu.addPresentationContext(cls.c_str(), x);
    }
    if (proposed.size() > 128) return make_error(pacs_name() + ": more than 128 kinds of object for one association");
    if (auto c = scu.initNetwork(); c.bad()) return make_error(pacs_name() + ": " + text(c));
    if (auto c = scu.negotiateAssociation(); c.bad()) {
      if (scu.isConnected()) scu.abortAssociation();
      return make_error(pacs_name() + ": cannot open an association to store results (" + text(c) + ")");
    }
    std::string refused;
    for (std::size_t n = 0; n < files.size(); ++n) {
      const auto id = scu.findPresentationContextID(classes[n].first.c_str(), classes[n].second.c_str());
      Uint16 status = 0;
      if (id == 0) {
        refused += "; " + files[n].filename().string() + ": the PACS does not take SOP class " + classes[n].first;
        continue;
      }
      const auto c = scu.sendSTORERequest(id, files[n].c_str(), nullptr, status);
      if (c.bad()) {
        scu.abortAssociation();
        return make_error(pacs_name() + ": C-STORE of " + files[n].string() + ": " + text(c));
      }
      if (status != STATUS_Success && (status & 0xf000) != 0xb000) {
        refused += "; " + files[n].filename().string() + ": status " + hex_status(status) + " (" + DU_cstoreStatusString(status) + ")";
      }
    }
    scu.releaseAssociation();
    if (!refused.empty()) return make_error(pacs_name() + ": the PACS refused" + refused);
    return Status::success();
  }

 private:
  std::string pacs_name() const { return "pacs dimse " + pacs_.dimse; }

  void configure(DcmSCU& scu) const {
    scu.setAETitle(pacs_.calling_ae.c_str());
    scu.setPeerAETitle(address_.ae.c_str());
    scu.setPeerHostName(address_.host.c_str());
    scu.setPeerPort(static_cast<Uint16>(address_.port));
    scu.setConnectionTimeout(10);
    scu.setACSETimeout(30);
    scu.setDIMSEBlockingMode(DIMSE_NONBLOCKING);
    scu.setDIMSETimeout(120);
  }

  // The association for finds and gets, opened on first use and tried again (0.5 s, 1 s, ...
  // apart) while the PACS cannot be reached; a refusal (an unknown calling AE title, say) is
  // not tried again.
  Status associate() {
    if (scu_.isConnected()) return Status::success();
    std::string failure;
    for (int attempt = 0; attempt < std::max(1, pacs_.attempts); ++attempt) {
      if (attempt) std::this_thread::sleep_for(std::chrono::milliseconds(500 << (attempt - 1)));
      scu_.clearPresentationContexts();
      configure(scu_);
      const auto x = uncompressed_syntaxes();
      scu_.addPresentationContext(UID_FINDStudyRootQueryRetrieveInformationModel, x);
      scu_.addPresentationContext(UID_GETStudyRootQueryRetrieveInformationModel, x);
      for (const char* cls : kImageClasses) scu_.addPresentationContext(cls, x, ASC_SC_ROLE_SCP);
      if (auto c = scu_.initNetwork(); c.bad()) return make_error(pacs_name() + ": " + text(c));
      const auto c = scu_.negotiateAssociation();
      if (c.good()) {
        if (scu_.findPresentationContextID(UID_GETStudyRootQueryRetrieveInformationModel, "") == 0 ||
            scu_.findPresentationContextID(UID_FINDStudyRootQueryRetrieveInformationModel, "") == 0) {
          scu_.releaseAssociation();
          return make_error(pacs_name() + ": the PACS accepted the association but not Study Root C-FIND and C-GET");
        }
        requests_ = 0;
        return Status::success();
      }
      if (scu_.isConnected()) scu_.abortAssociation();  // never left half open for the next request
      failure = text(c);
      if (c == NET_EC_NoAcceptablePresentationContexts) {
        return make_error(pacs_name() + ": the PACS accepts none of Study Root C-FIND, C-GET and MR storage (" + failure + ")");
      }
      if (c == DUL_ASSOCIATIONREJECTED) {
        return make_error(pacs_name() + ": the PACS rejected the association (" + failure + "; is calling_ae '" + pacs_.calling_ae +
                          "' one it knows?)");
      }
    }
    return make_error(pacs_name() + ": cannot reach the PACS (" + failure + ")");
  }

  // A request that failed on the wire: the association is gone, the next request opens another.
  // A PACS that breaks off at an association's first request (Orthanc does, for a caller it
  // does not know) is most often refusing the calling AE title.
  Error lost(const std::string& what, const OFCondition& c) {
    if (scu_.isConnected()) scu_.abortAssociation();
    const bool aborted = c == DUL_PEERABORTEDASSOCIATION && requests_ <= 1;
    return make_error(pacs_name() + ": " + what + ": " + text(c) +
                      (aborted ? " (the PACS broke the association off: does it let calling_ae '" + pacs_.calling_ae +
                                     "' query and retrieve?)"
                               : ""));
  }

  Status find_items(DcmDataset& query, const std::function<void(DcmDataset*)>& each) {
    if (auto st = associate(); !st) return st.error();
    ++requests_;
    OFList<QRResponse*> responses;
    const auto id = scu_.findPresentationContextID(UID_FINDStudyRootQueryRetrieveInformationModel, "");
    const auto c = scu_.sendFINDRequest(id, &query, &responses);
    Uint16 last = 0;
    for (auto* r : responses) {
      if (r->m_dataset) each(r->m_dataset);
      last = r->m_status;
      delete r;
    }
    if (c.bad()) return lost("C-FIND", c);
    if (last != STATUS_Success) return make_error(pacs_name() + ": C-FIND ended with status " + hex_status(last) + " (" + DU_cfindStatusString(last) + ")");
    return Status::success();
  }

  Result<std::vector<std::string>> find(DcmDataset& query, const DcmTagKey& key) {
    std::vector<std::string> out;
    auto st = find_items(query, [&](DcmDataset* d) { out.push_back(value_of(d, key)); });
    if (!st) return st.error();
    return out;
  }

  const PacsSource& pacs_;
  DimseAddress address_;
  Retriever scu_;
  int requests_ = 0;  // on the current association
};

}  // namespace

std::unique_ptr<PacsConnection> dimse_connection(const PacsSource& pacs) { return std::make_unique<DimseConnection>(pacs); }

}  // namespace fedda::imaging::detail
