# Sourced by the GPU bench scripts. Wheels carried to a machine that lacks packages codestage needs
# (.whl/, made by bench/fetch_gpu_wheels.sh) are installed into /tmp/site only where the given Python
# cannot import them already, and only then is /tmp/site put first on PYTHONPATH: on a machine that
# has them (a developer's venv, CI) the wheels, built for the GPU machine's Python, are left alone.
#
#   source bench/wheels.sh; SITE=$(carried_wheels "$PY") || exit 1; export PYTHONPATH="${SITE}$PWD/src"
carried_wheels() {  # carried_wheels PYTHON: prints "/tmp/site:" when it installed there, else nothing
  local py="$1"
  if [ ! -d .whl ] || "$py" -c "import pydantic, zstandard; assert int(pydantic.VERSION.split('.')[0]) >= 2" 2>/dev/null; then
    return 0
  fi
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >&2 \
    || return 1
  printf '/tmp/site:'
}
