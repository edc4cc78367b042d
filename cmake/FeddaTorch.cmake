# LibTorch: Debian's (libtorch-dev, 1.13, CPU) by default, or any LibTorch from 1.13 on that a
# site installs for its GPU, through -DTorch_DIR=<its share/cmake/Torch> (the official archive's
# libtorch/share/cmake/Torch, or a PyTorch wheel's: python3 -c 'import torch; print(torch.utils.cmake_prefix_path)').
# Found once here, for every component that includes it (models, tests, benchmarks).
find_package(Torch 1.13 REQUIRED)
message(STATUS "LibTorch ${Torch_VERSION} from ${Torch_DIR}")

# fedda links Debian's libraries (spdlog, yaml-cpp, ITK, ZeroMQ ...), all built with the C++11
# ABI of libstdc++; a LibTorch built with the old ABI would link into undefined std::string
# symbols, or worse, pass strings across the two layouts. Refuse it here, by name.
if(TORCH_CXX_FLAGS MATCHES "_GLIBCXX_USE_CXX11_ABI=0")
  message(FATAL_ERROR
    "The LibTorch in ${Torch_DIR} is built with the pre-C++11 ABI (TORCH_CXX_FLAGS: ${TORCH_CXX_FLAGS}); "
    "fedda's other libraries use the C++11 ABI. Use the official archive's cxx11-ABI build "
    "(libtorch-cxx11-abi-shared-with-deps-<version>+<cuda>.zip, or from 2.7 on any libtorch archive) or a "
    "PyTorch wheel from 2.7 on, and pass its share/cmake/Torch as -DTorch_DIR.")
endif()

