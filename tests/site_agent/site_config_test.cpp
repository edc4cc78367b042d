// Site configs and `check`: a hospital administrator's mistakes are named before joining.
#include "fedda/site_agent/site_config.h"

#include "fedda/common/files.h"

#include <gtest/gtest.h>

#include <fstream>

#include "support/test_support.h"

namespace fedda::site_agent {
namespace {

class SiteConfigTest : public ::testing::Test {
 protected:
  std::filesystem::path write(const std::string& text) {
    const auto path = dir_ / "site.yaml";
    std::ofstream(path) << text;
    return path;
  }
  testing::ScratchDir dir_;
};

TEST_F(SiteConfigTest, ReadsAConfigWithPathsRelativeToIt) {
  auto c = read_site_config(write("site_id: amsterdam\ncoordinator: tcp://127.0.0.1:5570\ndata: scans/amsterdam\n"));
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->site_id, "amsterdam");
  EXPECT_EQ(c->data, dir_.path() / "scans/amsterdam");
  EXPECT_EQ(c->cache_dir, dir_.path() / "cache-amsterdam");
  EXPECT_EQ(c->device, "cpu");
}

TEST_F(SiteConfigTest, MistakesAreNamed) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"coordinator: tcp://h:1\ndata: d\n", "site_id is required"},
      {"site_id: a\ndata: d\n", "coordinator is required"},
      {"site_id: a\ncoordinator: http://h:1\ndata: d\n", "not a ZeroMQ endpoint"},
      {"site_id: a\ncoordinator: tcp://h:1\n", "data is required"},
      {"site_id: a\ncoordinator: tcp://h:1\ndata: d\ndevice: tpu\n", "device 'tpu'"},
      {"site_id: a\ncoordinator: tcp://h:1\ndata: d\nthreds: 2\n", "unknown key 'threds'"},
      {"site_id: a\ncoordinator: tcp://h:1\ndata: d\nthreds: 2\n", ":4:1; did you mean 'threads'?"},
      {"site_id: a\ncoordinator: tcp://h:1\ndata: d\nroot_fingerprint: sha256:" + std::string(64, '0') + "\n",
       "root_fingerprint is still the example's placeholder (all zeros)"},
      {"site_id: a\ncoordinator: tcp://h:1\ndata: d\nthreads: two\n", "key 'threads': expected an integer"},
      {"site_id: a\ncoordinator: tcp://h:1\ndata: d\nmetrics_listen: 0.0.0.0:9470\n", "metrics_listen '0.0.0.0:9470' must be a loopback"},
      {"site_id: a\ncoordinator: tcp://h:1\ndata: d\nmetrics_listen: 9470\n", "metrics_listen '9470'"},
      {"site_id: a\ncoordinator: tcp://h:1\ndata: d\ndata: e\n", "key 'data' is given twice"},
      {"site_id: a\ncoordinator: tcp://h:1\ndata: d\npolicy:\n  approval: manual\n  approval: auto\n",
       "policy: key 'approval' is given twice"},
      {"site_id: a\ncoordinator: tcp://h:1\ndata: d\ndata_layout: tape\n", "data_layout 'tape' (choose wmh, bids, datalist, dicom or pacs)"},
      {"site_id: a\ncoordinator: tcp://h:1\ndata_layout: pacs\n", "data_layout: pacs needs pacs: {dicomweb: URL}"},
      {"site_id: a\ncoordinator: tcp://h:1\ndata: d\npacs: {dicomweb: http://127.0.0.1:8042/dicom-web}\n", "pacs: applies to data_layout: pacs only"},
      {"site_id: a\ncoordinator: tcp://h:1\ndata: d\ndata_layout: pacs\npacs: {dicomweb: http://127.0.0.1:8042/dicom-web}\n",
       "data: does not apply to data_layout: pacs"},
      {"site_id: a\ncoordinator: tcp://h:1\ndata_layout: pacs\npacs: {dicomweb: http://127.0.0.1:8042/dicom-web, credentials_file: open.txt}\n",
       "open.txt may be read by others than its owner (mode 644): chmod 600 it"},
      {"site_id: a\ncoordinator: tcp://h:1\ndata_layout: pacs\npacs: {dicomweb: http://127.0.0.1:8042/dicom-web, credentials_file: none.txt}\n",
       "pacs: credentials_file: "},
      {"site_id: a\ncoordinator: tcp://h:1\ndata_layout: pacs\npacs: {dicomweb: \"http://u:pw@127.0.0.1:8042/dicom-web\"}\n",
       "a user or password in the URL is refused"},
      {"site_id: a\ncoordinator: tcp://h:1\ndata_layout: pacs\npacs: {dicomweb: http://127.0.0.1:8042/dicom-web, dimse: ORTHANC@127.0.0.1:4242}\n",
       "pacs: dicomweb and dimse are two ways to the PACS; give one"},
      {"site_id: a\ncoordinator: tcp://h:1\ndata_layout: pacs\npacs: {dimse: \"ORTHANC:4242\"}\n",
       "pacs dimse 'ORTHANC:4242': not AE_TITLE@HOST:PORT"},
      {"site_id: a\ncoordinator: tcp://h:1\ndata_layout: pacs\npacs: {dimse: \"A_TITLE_LONGER_THAN_16@h:4242\"}\n",
       "the AE title is 1 to 16 characters"},
      {"site_id: a\ncoordinator: tcp://h:1\ndata_layout: pacs\npacs: {dimse: \"ORTHANC@h:99999\"}\n", "the port is not 1-65535"},
      {"site_id: a\ncoordinator: tcp://h:1\ndata_layout: pacs\npacs: {dimse: \"ORTHANC@h:4242\", ca_file: ca.pem}\n",
       "pacs: ca_file applies to an https dicomweb URL only"},
      {"site_id: a\ncoordinator: tcp://h:1\ndata_layout: pacs\npacs: {dicomweb: http://127.0.0.1:8042/dicom-web, ca_file: ca.pem}\n",
       "pacs: ca_file applies to an https dicomweb URL only"},
      {"site_id: a\ncoordinator: tcp://h:1\ndata_layout: pacs\npacs: {dicomweb: http://127.0.0.1:8042/dicom-web, page_size: 0}\n",
       "pacs: page_size must be at least 1"},
      {"site_id: a\ncoordinator: tcp://h:1\ndata_layout: pacs\npacs: {dicomweb: ftp://127.0.0.1/dicom-web}\n",
       "is not an http:// or https:// URL"},
      {"site_id: a\ncoordinator: tcp://h:1\ndata: d\nbids_labels: wmh\n", "apply to data_layout: bids only"},
      {"site_id: a\ncoordinator: tcp://h:1\ndata: d\ndata_layout: bids\nbids_filters: {echo: 1}\n",
       "bids_filters: unknown key 'echo'"},
      {"site_id: a\ncoordinator: tcp://h:1\ndata: d\ndata_layout: bids\nbids_labels: ../x\n", "not a path"},
      {"site_id: a\ncoordinator: tcp://h:1\ndata_layout: datalist\n", "the datalist's JSON file"},
      {"site_id: a\ncoordinator: tcp://h:1\ndata: d\ndicom_flair: FLAIR\n", "apply to data_layout: dicom or pacs only"},
      {"site_id: a\ncoordinator: tcp://h:1\ndata: d\ndata_layout: dicom\ndicom_t1: \"T1(\"\n", "dicom_t1 'T1(' is not a regular expression"},
  };
  std::ofstream(dir_ / "open.txt") << "user:password\n";
  std::filesystem::permissions(dir_ / "open.txt", std::filesystem::perms(0644));
  for (const auto& [text, expected] : cases) {
    auto c = read_site_config(write(text));
    ASSERT_FALSE(c) << text;
    EXPECT_NE(c.error().message.find(expected), std::string::npos) << c.error().message;
  }
}

TEST_F(SiteConfigTest, APacsSiteReadsItsCredentialsFromAFileOnlyItsOwnerReads) {
  ASSERT_TRUE(files::write_secret(dir_ / "pacs.credentials", "fedda:s3cr:et\n"));
  auto c = read_site_config(write("site_id: a\ncoordinator: tcp://h:1\ndata_layout: pacs\npacs:\n"
                                  "  dicomweb: http://127.0.0.1:8042/dicom-web\n  credentials_file: pacs.credentials\n"
                                  "  study_dates: 20170101-\n  accession_numbers: [A1, A2]\n"));
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->pacs.user, "fedda");
  EXPECT_EQ(c->pacs.password, "s3cr:et");  // only the first colon splits
  EXPECT_EQ(c->pacs.study_dates, "20170101-");
  EXPECT_EQ(c->pacs.accession_numbers, (std::vector<std::string>{"A1", "A2"}));
  EXPECT_TRUE(c->data.empty());

  // Over https with the PACS's CA beside site.yaml, in pages of 25; a CA file that is not there is named.
  c = read_site_config(write("site_id: a\ncoordinator: tcp://h:1\ndata_layout: pacs\npacs:\n"
                             "  dicomweb: https://pacs.example.org/dicom-web\n  ca_file: pacs-ca.pem\n"));
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message.find("pacs: ca_file " + (dir_ / "pacs-ca.pem").lexically_normal().string() + ": No such file"),
            std::string::npos)
      << c.error().message;
  std::ofstream(dir_ / "pacs-ca.pem") << "-----BEGIN CERTIFICATE-----\n";
  c = read_site_config(write("site_id: a\ncoordinator: tcp://h:1\ndata_layout: pacs\npacs:\n"
                             "  dicomweb: https://pacs.example.org/dicom-web\n  ca_file: pacs-ca.pem\n  page_size: 25\n"));
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->pacs.ca_file, (dir_ / "pacs-ca.pem").lexically_normal().string());
  EXPECT_EQ(c->pacs.page_size, 25);
  // Over DIMSE, with this agent's AE title.
  c = read_site_config(write("site_id: a\ncoordinator: tcp://h:1\ndata_layout: pacs\npacs: {dimse: ORTHANC@127.0.0.1:4242, calling_ae: FEDDA_UMC}\n"));
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->pacs.dimse, "ORTHANC@127.0.0.1:4242");
  EXPECT_EQ(c->pacs.calling_ae, "FEDDA_UMC");
  EXPECT_EQ(data_location(*c), "dimse ORTHANC@127.0.0.1:4242");
}

TEST_F(SiteConfigTest, CheckListsEveryBrokenSubject) {
  // Two subjects: one whose FLAIR is not a NIfTI file, one with no T1 at all.
  const auto site = dir_ / "clinic";
  std::filesystem::create_directories(site / "s1" / "pre");
  std::filesystem::create_directories(site / "s2" / "pre");
  std::ofstream(site / "s1" / "pre" / "FLAIR.nii.gz") << "not an image";
  std::ofstream(site / "s1" / "pre" / "T1.nii.gz") << "not an image";
  std::ofstream(site / "s2" / "pre" / "FLAIR.nii.gz") << "not an image";
  auto c = read_site_config(write("site_id: a\ncoordinator: tcp://127.0.0.1:1\ndata: clinic\n"));
  ASSERT_TRUE(c) << c.error().message;
  const auto report = check_site(*c);
  EXPECT_EQ(report.usable, 0);
  ASSERT_GE(report.problems.size(), 1u);
  std::string all;
  for (const auto& p : report.problems) all += p + "\n";
  EXPECT_NE(all.find("s1"), std::string::npos) << all;
}

}  // namespace
}  // namespace fedda::site_agent
