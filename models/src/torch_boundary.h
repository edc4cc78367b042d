#pragma once
// LibTorch at the models library's boundary: LibTorch reports a failure by throwing (c10::Error
// for a shape, a device or memory; the standard library and JSON throw too). An entry point runs
// its body through at_boundary, which returns any of them as an internal Error naming what it was
// doing ("training: ..."), LibTorch's C++ backtrace left out. Private to the library.
//
// Caught as std::exception (c10::Error derives from it): with Debian's LibTorch 1.13 a handler
// for c10::Error did not catch the error of a bad view (TorchBoundary test), most likely because
// the type's identity differs across the library boundary.

#include <exception>
#include <string>

#include "fedda/common/result.h"

namespace fedda::models {

template <class F>
auto at_boundary(const std::string& what, F&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const std::exception& e) {
    std::string text = e.what();
    // c10::Error's text may go on with "Exception raised from ..." and a C++ backtrace.
    if (const auto cut = text.find("\nException raised from"); cut != std::string::npos) text.erase(cut);
    return make_error(what + ": " + text, ErrorKind::internal);
  }
}

}  // namespace fedda::models
