#pragma once
// The rows of a results.csv as the experiment and its report read them (private to the
// experiment library): protocol::ResultRow, parsed by protocol::parse_results_csv.

#include "fedda/common/protocol.h"

namespace fedda::experiment {

using ResultRow = protocol::ResultRow;

}  // namespace fedda::experiment
