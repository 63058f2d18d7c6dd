# Shell helpers shared by the project's scripts (tests/run-all.sh, cross/*.sh, benches/*.sh,
# models/test.sh). Source it:   . "$(dirname "$0")/../tests/helpers.sh"

# The path of libonnxruntime.so inside the onnxruntime wheel of a Python environment (default
# models/.venv), for ORT_DYLIB_PATH.
ort_library() {
  "${1:-models/.venv/bin/python}" -c 'import onnxruntime, pathlib; print(next((pathlib.Path(onnxruntime.__file__).parent / "capi").glob("libonnxruntime.so.*")))'
}

# Installs the Debian packages given that are missing (apt, as root or with sudo).
apt_install() {
  local missing=() package
  for package in "$@"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo
  sudo=$([ "$(id -u)" = 0 ] || echo sudo)
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# Prints a step's title and the seconds the calling script has run so far (CI's log then shows
# where the time goes).
step() {
  echo "== $* [${SECONDS} s]"
}
