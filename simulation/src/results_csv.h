#pragma once
// The rows of a results.csv (source,target,fold,method,mode,subject,dsc,...), as the experiment
// and its report read them (private to the simulation library).

#include <cmath>
#include <string>
#include <vector>

namespace fedda::simulation {

struct ResultRow {
  std::string source, target, method, mode, subject;
  int fold = 0;
  double dsc = NAN;  // NaN when undefined (an empty cell)
};

// Parses CSV text that starts with its header line; lines with too few fields are skipped.
std::vector<ResultRow> parse_result_rows(const std::string& csv);

}  // namespace fedda::simulation
