#!/usr/bin/env bash
# Static checks of infra/ (no cloud): checkov on the Bicep, the Azure Terraform and the Google Cloud Terraform
# (infra/terraform/gcp, reported on its own).
#
# Checkov is heavy and pins its own parsers, so it lives in its own virtualenv (.venv-infra at the project
# root), created on first use and re-created when CHECKOV_VERSION changes. Exits non-zero when a check
# fails, when a file cannot be parsed (checkov would otherwise skip it silently) or when nothing was scanned.
# Every accepted finding is a `checkov:skip=<id>: <reason>` comment next to its resource.
set -euo pipefail
cd "$(dirname "$0")/.."

CHECKOV_VERSION=3.3.30
VENV=.venv-infra
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}

if [ "$("$VENV/bin/checkov" --version 2>/dev/null || true)" != "$CHECKOV_VERSION" ]; then
  echo "== creating $VENV with checkov $CHECKOV_VERSION"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet "checkov==$CHECKOV_VERSION"
fi

results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT

status=0
for target in bicep terraform terraform/gcp; do
  echo "== checkov: infra/$target"
  framework=${target%%/*}
  report="$results/${target//\//-}"
  skip=()
  # NB. A regular expression over whole paths: only the Google Cloud templates, whatever the clone is called.
  [ "$target" = terraform ] && skip=(--skip-path "infra/terraform/gcp/")
  # --skip-download: no calls to Prisma Cloud; the checks ship with the package.
  "$VENV/bin/checkov" --directory "infra/$target" --framework "$framework" --skip-download "${skip[@]}" \
    --output json --output-file-path "$report" >/dev/null || true
  "$VENV/bin/python" - "$report/results_json.json" "$target" <<'EOF' || status=1
import json
import sys

path, target = sys.argv[1], sys.argv[2]
with open(path, encoding="utf-8") as handle:
    report = json.load(handle)
reports = report if isinstance(report, list) else [report]
summary = {key: sum(r["summary"][key] for r in reports) for key in ("passed", "failed", "skipped", "parsing_errors")}
resources = sum(r["summary"]["resource_count"] for r in reports)
print(f"{target}: {summary['passed']} passed, {summary['failed']} failed, {summary['skipped']} skipped, "
      f"{summary['parsing_errors']} parsing errors, {resources} resources")
for r in reports:
    for error in r["results"].get("parsing_errors", []):
        print(f"  cannot parse {error}")
    for failed in r["results"].get("failed_checks", []):
        where = f"{failed['file_path']}:{failed['file_line_range'][0]}"
        print(f"  FAILED {failed['check_id']} {failed['check_name']} on {failed['resource']} ({where})")
    for skipped in r["results"].get("skipped_checks", []):
        reason = (skipped["check_result"].get("suppress_comment") or "").strip()
        print(f"  skipped {skipped['check_id']} on {skipped['resource']}: {reason}")
sys.exit(1 if summary["failed"] or summary["parsing_errors"] or not resources else 0)
EOF
done

if [ "$status" -ne 0 ]; then
  echo "infra/ci.sh: checkov found problems (see above)" >&2
fi
exit "$status"
