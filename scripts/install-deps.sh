#!/usr/bin/env bash
# Installs every Debian 12 package fedda needs to build, test and run the demo.
# Idempotent: installs only what is missing, and runs `apt-get update` only when
# something is missing. Safe to call from `make demo` and `make test` every time.
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config
  libtorch-dev
  # OpenBLAS (OpenMP build, so it shares LibTorch's threads) instead of the reference BLAS:
  # LibTorch's BLAS-backed kernels (transposed convolution, linear layers) run 2x faster.
  libopenblas0-openmp
  python3-torch  # the Python reference of benchmarks/reference_unet.py
  libzmq3-dev cppzmq-dev
  libcereal-dev
  libssl-dev
  libgfshare-dev  # Shamir secret sharing for secure aggregation
  libinsighttoolkit5-dev
  dcm2niix  # data_layout: dicom converts series to NIfTI with it
  # fedda-agent segment's DICOM Segmentation and measurement report (DCMTK's dcmseg, dcmsr), and
  # dciodvfy (dicom3tools), which the tests validate them with.
  libdcmtk-dev dicom3tools
  # data_layout: pacs is tested against a real PACS: Orthanc with its DICOMweb plugin, on loopback.
  orthanc orthanc-dicomweb
  # ... over https too: stunnel in front of it with a certificate the openssl command makes
  # (Debian 12's Orthanc ends on its first request with its own SslEnabled on).
  stunnel4 openssl
  libspdlog-dev libfmt-dev
  libgtest-dev libgmock-dev
  libbenchmark-dev
  libcli11-dev
  libyaml-cpp-dev
  nlohmann-json3-dev
  libboost-dev
  libcmark-gfm-dev libcmark-gfm-extensions-dev
  gnuplot-nox
  libpng-dev
  zlib1g-dev
  mricron-data
  clang
  libclang-rt-14-dev
  libcpp-httplib-dev  # the coordinator's status page, JSON API and /metrics
  # fedda-sim experiment --plan: the engines its tests run a plan with (GNU parallel, Snakemake).
  parallel snakemake
  # Packaging and its tests: dpkg-shlibdeps (dpkg-dev), `systemd-analyze verify` (systemd),
  # the status page in a headless browser (chromium), `promtool check metrics` (prometheus).
  dpkg-dev fakeroot systemd chromium prometheus curl
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

# The official BIDS validator (npm's bids-validator; Debian has no full validator) checks the
# BIDS datasets fedda-sim writes. Node and npm from Debian where the machine has none.
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
if ((${#missing[@]} > 0)); then
  echo "install-deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

tools=/opt/fedda-tools  # tests look for tools/node_modules/.bin/bids-validator here
if [ ! -x "$tools/node_modules/.bin/bids-validator" ]; then
  echo "install-deps: installing bids-validator 1.14.14 (npm) in $tools" >&2
  $SUDO mkdir -p "$tools"
  $SUDO npm install --silent --no-audit --no-fund --prefix "$tools" bids-validator@1.14.14 >/dev/null
fi
