#!/usr/bin/env bash
# Screenshots of the console's main pages for the README (docs/images/console-*.png), taken by the
# browser test in a real Chromium against real Keycloak and tasking servers.
#   services/console/screenshots.sh        (uses $TOEX_TEST_KEYCLOAK_URL if set, else its own Keycloak)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
TOEX_CONSOLE_SCREENSHOTS="$root/docs/images" \
    uv run --frozen --no-sync pytest -q -p no:cacheprovider \
    services/console/tests/integration/test_browser.py \
    services/console/tests/integration/test_comms_browser.py \
    services/console/tests/integration/test_browser_entities_national_pnd.py
ls -1 docs/images/console-*.png
