# Shared compile settings for every fedda target, in one INTERFACE target.
add_library(fedda_standard_settings INTERFACE)
target_compile_features(fedda_standard_settings INTERFACE cxx_std_17)
target_compile_options(fedda_standard_settings INTERFACE
  -Wall -Wextra -Wno-unused-parameter)

option(FEDDA_SANITIZE "Build with AddressSanitizer and UndefinedBehaviorSanitizer" OFF)
# UBSan findings are recoverable only so that cmake/ubsan.supp can silence the one that sits in
# ITK's own headers; every other finding still stops the test (halt_on_error=1).
set(FEDDA_TEST_ENVIRONMENT "")
if(FEDDA_SANITIZE)
  target_compile_options(fedda_standard_settings INTERFACE
    -fsanitize=address,undefined -fno-omit-frame-pointer)
  target_link_options(fedda_standard_settings INTERFACE -fsanitize=address,undefined)
  set(FEDDA_TEST_ENVIRONMENT
    "UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:suppressions=${CMAKE_SOURCE_DIR}/cmake/ubsan.supp")
endif()

option(FEDDA_WERROR "Treat warnings as errors" OFF)
if(FEDDA_WERROR)
  target_compile_options(fedda_standard_settings INTERFACE -Werror)
endif()

# ccache, with the sloppiness that lets it cache precompiled headers.
find_program(FEDDA_CCACHE ccache)
if(FEDDA_CCACHE AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  set(CMAKE_CXX_COMPILER_LAUNCHER
      ${CMAKE_COMMAND} -E env CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
      ${FEDDA_CCACHE})
  set(CMAKE_C_COMPILER_LAUNCHER ${CMAKE_CXX_COMPILER_LAUNCHER})
endif()

# Adds a fedda component library: fedda_add_library(NAME SOURCES ... DEPENDS ... [INCLUDE DIR])
# Public headers live in NAME/include/fedda/NAME/ (or DIR/fedda/NAME/), sources in NAME/src/:
# each library has its own include root, so an include's path names its library and a library
# cannot reach a header of one it does not depend on.
function(fedda_add_library name)
  cmake_parse_arguments(ARG "" "INCLUDE" "SOURCES;PUBLIC_DEPENDS;PRIVATE_DEPENDS" ${ARGN})
  if(NOT ARG_INCLUDE)
    set(ARG_INCLUDE ${CMAKE_CURRENT_SOURCE_DIR}/include)
  endif()
  add_library(fedda_${name} STATIC ${ARG_SOURCES})
  add_library(fedda::${name} ALIAS fedda_${name})
  target_include_directories(fedda_${name} PUBLIC ${ARG_INCLUDE})
  target_link_libraries(fedda_${name}
    PUBLIC ${ARG_PUBLIC_DEPENDS}
    PRIVATE fedda_standard_settings ${ARG_PRIVATE_DEPENDS})
endfunction()

# Adds a GoogleTest executable and registers its tests with a ctest label.
function(fedda_add_test name)
  cmake_parse_arguments(ARG "" "LABEL" "SOURCES;DEPENDS" ${ARGN})
  if(NOT ARG_LABEL)
    set(ARG_LABEL unit)
  endif()
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE fedda_standard_settings ${ARG_DEPENDS} GTest::gtest GTest::gtest_main)
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  set(environment "FEDDA_BIN_DIR=${CMAKE_BINARY_DIR}/bin" "FEDDA_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
  if(FEDDA_TEST_ENVIRONMENT)
    list(APPEND environment "${FEDDA_TEST_ENVIRONMENT}")
  endif()
  gtest_discover_tests(${name}
    PROPERTIES LABELS ${ARG_LABEL}
    ENVIRONMENT "${environment}"
    DISCOVERY_TIMEOUT 60)
endfunction()
