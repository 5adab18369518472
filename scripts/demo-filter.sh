#!/usr/bin/env bash
# Shows the demo's own output and the verdict, not go test's bookkeeping.
set -o pipefail
status=0
while IFS= read -r line; do
	case $line in
	"=== RUN"* | "=== PAUSE"* | "=== CONT"*) ;;
	"--- FAIL"* | FAIL*) echo "$line"; status=1 ;;
	"--- PASS"* | PASS | ok*) ;;
	*"[no test files]"*) ;;
	*) echo "$line" ;;
	esac
done
if ((status)); then echo "demo: FAILED"; exit 1; fi
echo "demo: done"
