#!/usr/bin/env bash
# Mutant suite (not part of every CI run; see docs/RELIABILITY.md): each patch under
# tests/mutants/ plants one bug. This applies each to a scratch copy of the tree, runs the test
# its header names (`# test: ...`), and fails if any mutant survives (its test passes).
#   ci/mutants.sh                 every mutant
#   ci/mutants.sh NAME [NAME...]  only these (file names without .patch)
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "$0")/lib.sh"
root="$(pwd)"
# Outside the repository: `git apply` in a subdirectory of a repository silently skips
# paths outside that subdirectory, i.e. it would apply nothing.
scratch="${TMPDIR:-/tmp}/kvshm-mutants-tree-$$"
trap 'rm -rf "$scratch"' EXIT
export CARGO_TARGET_DIR="$root/target/mutants/target"
rm -rf "$scratch"
mkdir -p "$scratch" "$root/target/mutants"
tar --exclude=./target --exclude=./.git -cf - . | tar -xf - -C "$scratch"
if [ $# -gt 0 ]; then
  patches=()
  for n in "$@"; do patches+=("tests/mutants/$n.patch"); done
else
  patches=(tests/mutants/*.patch)
fi
survived=()
for p in "${patches[@]}"; do
  name="$(basename "$p" .patch)"
  test_cmd="$(sed -n 's/^# test: //p' "$p" | head -1)"
  (cd "$scratch" && git apply --check "$root/$p" && git apply "$root/$p")
  if (cd "$scratch" && git apply --check "$root/$p" 2>/dev/null); then
    echo "$name: the patch did not apply" >&2
    exit 2
  fi
  start=$SECONDS
  # shellcheck disable=SC2086 # the test command is split into words on purpose
  if (cd "$scratch" && timeout 900 $test_cmd >"$root/target/mutants/$name.log" 2>&1); then
    echo "SURVIVED $name ($((SECONDS - start)) s): $test_cmd"
    survived+=("$name")
  elif grep -q -E "could not compile|^error\[E" "$root/target/mutants/$name.log"; then
    echo "BROKEN   $name: the mutant does not build (see target/mutants/$name.log)"
    survived+=("$name (does not build)")
  else
    echo "killed   $name ($((SECONDS - start)) s): $test_cmd"
  fi
  (cd "$scratch" && git apply -R "$root/$p")
done
if [ ${#survived[@]} -gt 0 ]; then
  echo "mutants that survived: ${survived[*]} (logs in target/mutants/)" >&2
  exit 1
fi
echo "all ${#patches[@]} mutants killed"
