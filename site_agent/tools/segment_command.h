#pragma once
// `fedda-agent segment`: one subject segmented locally, as NIfTI and, from a DICOM folder, as a
// DICOM Segmentation and a TID 1500 measurement report a radiologist's viewer opens.

#include <CLI/CLI.hpp>

namespace fedda::site_agent {

// Adds the subcommand to `app`; its callback sets `rc` (0 done, 1 failed, 2 usage).
void add_segment_command(CLI::App& app, int& rc);

}  // namespace fedda::site_agent
