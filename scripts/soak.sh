#!/usr/bin/env bash
# The fault-injection suite, longer: more seeds, more events per seed. Any failing seed replays
# exactly with FAULT_SEEDS=<seed> npm run test:faults.
#   npm run soak                      20 seeds x 20,000 events
#   SOAK_SEEDS=40 SOAK_EVENTS=50000 npm run soak
set -euo pipefail
first=${SOAK_FIRST_SEED:-100}
count=${SOAK_SEEDS:-20}
seeds=$(seq -s, "$first" $((first + count - 1)))
FAULT_SEEDS="$seeds" FAULT_EVENTS="${SOAK_EVENTS:-20000}" npm run test:faults
