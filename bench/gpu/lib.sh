# Sourced by check.sh and full.sh (both run from .gpu/ on the GPU machine).

# unpack_triage XZ DEST PY: the carried binary, with Python's lzma where xz is missing.
unpack_triage() {
  if command -v xz >/dev/null; then xz -dc "$1" >"$2"
  else "$3" -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],"wb"))' "$1" "$2"; fi
  chmod +x "$2"
}
