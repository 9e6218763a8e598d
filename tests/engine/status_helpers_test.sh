#!/bin/sh
# engine/status.h: the statuses whose absl name differs from voxdb's meaning
# (absl's UNAVAILABLE is voxdb's BUSY, voxdb's UNAVAILABLE is absl's
# CANCELLED, ...) are made and tested only through status.h's helpers, so
# that each name keeps one meaning from the engine to the wire and the CLI.
# Fails listing every line of voxdb's sources that bypasses them.
#
#   status_helpers_test.sh SOURCE_DIR
set -eu
src=${1:?usage: status_helpers_test.sh SOURCE_DIR}
codes='Unavailable|Cancelled|ResourceExhausted|Aborted|DataLoss|OutOfRange|FailedPrecondition|Unimplemented|AlreadyExists'
pattern="absl::(${codes})Error\(|absl::Is(${codes})\("
cd "$src"
found=$(grep -rnE "$pattern" engine index daemon cli protocol \
  --include='*.h' --include='*.cc' --include='*.h.in' | grep -v '^engine/status\.h:' || true)
if [ -n "$found" ]; then
  echo "these lines make or test a status without engine/status.h's helpers:"
  echo "$found"
  exit 1
fi
echo "every status is made through engine/status.h"
